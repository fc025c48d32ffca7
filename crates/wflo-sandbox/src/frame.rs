//! How a program reaches the container, and how its end comes back.
//!
//! The container's command is a fixed bootstrap (`python3 -c BOOTSTRAP`, the same for every
//! request, so a warm container can wait for any program). It reads
//! `<header length>\n<header JSON><code><file 1>...<file n><stdin>` from stdin, places the files
//! in /workspace and the stdin in a file on the /tmp tmpfs (so the program never depends on the
//! attach stream closing), then forks: the child takes that stdin as fd 0, the request's
//! environment (only), and runs the code — Python in the already started interpreter it
//! inherited (nothing to start in a warm container), bash by `execv`. The parent waits for the
//! child and writes an end trailer `\x1eWFLO-END:<nonce>:<exit code>:<oom kills>` on stdout
//! *and* stderr (each stream is ordered, so once both trailers are in, both streams are
//! complete). The runtime strips the trailers and so knows the outcome without waiting for
//! Docker to tear the container down. The per-execution nonce keeps program output from being
//! mistaken for a trailer; a program that digs the nonce out of its own memory can only
//! misreport its own exit code, which it could do by exiting anyway. When no trailer arrives
//! (a SIGKILL, the OOM killer, a timeout), the container's state decides.
//!
//! The code, env values and stdin are never in the container's configuration, so
//! `docker inspect` does not show them.

use crate::ExecRequest;

// Exit code 125 (with a `wflo-sandbox: could not prepare the program` line on stderr) means
// the bootstrap could not place the files or stdin (e.g. over the tmpfs sizes).

/// The trailer's prefix for one execution.
pub(crate) fn marker(nonce: &str) -> Vec<u8> {
    format!("\x1eWFLO-END:{nonce}:").into_bytes()
}

/// What the bootstrap reported after the program ended: exit code, and the cgroup's OOM kill
/// count (-1 when unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct End {
    pub(crate) exit_code: i64,
    pub(crate) oom_kills: i64,
}

/// One output stream: keeps up to `cap` bytes of program output and finds the end trailer,
/// even when it arrives split over several chunks.
#[derive(Debug, Default)]
pub(crate) struct StreamScan {
    pub(crate) kept: Vec<u8>,
    pub(crate) truncated: bool,
    pending: Vec<u8>,
    pub(crate) end: Option<End>,
}

/// Longest `<exit>:<oom>` after the marker.
const TAIL_MAX: usize = 48;

impl StreamScan {
    fn commit(&mut self, upto: usize, cap: usize) {
        let room = cap.saturating_sub(self.kept.len());
        if upto > room {
            self.truncated = true;
        }
        self.kept.extend_from_slice(&self.pending[..upto.min(room)]);
        self.pending.drain(..upto);
    }

    pub(crate) fn feed(&mut self, data: &[u8], cap: usize, marker: &[u8]) {
        if self.end.is_some() {
            return;
        }
        self.pending.extend_from_slice(data);
        loop {
            let Some(i) = find(&self.pending, marker) else {
                // Keep back what could be the start of a marker split over chunks.
                let hold = marker.len().saturating_sub(1).min(self.pending.len());
                self.commit(self.pending.len() - hold, cap);
                return;
            };
            self.commit(i, cap);
            let rest = &self.pending[marker.len()..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    if let Some(end) = parse_end(&rest[..nl]) {
                        self.end = Some(end);
                        self.pending.clear();
                        return;
                    }
                    // Not a trailer after all: keep it as output and look further.
                    self.commit(1, cap);
                }
                None if rest.len() > TAIL_MAX => self.commit(1, cap),
                None => return, // wait for the rest of the trailer
            }
        }
    }

    /// The stream ended without a trailer: everything pending is output.
    pub(crate) fn finish(&mut self, cap: usize) {
        if self.end.is_none() {
            let n = self.pending.len();
            self.commit(n, cap);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_end(s: &[u8]) -> Option<End> {
    let s = std::str::from_utf8(s).ok()?;
    let (rc, oom) = s.split_once(':')?;
    Some(End {
        exit_code: rc.parse().ok()?,
        oom_kills: oom.parse().ok()?,
    })
}
pub(crate) const BOOTSTRAP: &str = r#"import os, sys, json, types, builtins, linecache, traceback
def _rd(n):
    b = bytearray()
    while len(b) < n:
        c = os.read(0, min(n - len(b), 1 << 20))
        if not c:
            os._exit(0)
        b += c
    return bytes(b)
def _oom():
    for p in ('/sys/fs/cgroup/memory/memory.oom_control', '/sys/fs/cgroup/memory.events'):
        try:
            with open(p) as f:
                for line in f:
                    k, _, v = line.partition(' ')
                    if k == 'oom_kill':
                        return int(v)
        except (OSError, ValueError):
            pass
    return -1
def _end(nonce, rc):
    t = ('\x1eWFLO-END:%s:%d:%d\n' % (nonce, rc, _oom())).encode()
    for fd in (1, 2):
        try:
            os.write(fd, t)
        except OSError:
            pass
    os._exit(rc & 255)
def _child(h, code, fd):
    os.dup2(fd, 0)
    os.close(fd)
    os.environ.clear()
    os.environ.update({'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
                       'HOME': '/workspace', 'LANG': 'C.UTF-8',
                       'PYTHONUNBUFFERED': '1', 'PYTHONDONTWRITEBYTECODE': '1'})
    os.environ.update(h['env'])
    os.chdir('/workspace')
    if h['lang'] == 'bash':
        os.execv('/bin/bash', ['bash', '/tmp/.wflo/main.sh'])
    m = types.ModuleType('__main__')
    m.__file__ = '/workspace/main.py'
    m.__builtins__ = builtins
    sys.modules['__main__'] = m
    sys.argv = ['main.py']
    sys.path[0] = '/workspace'
    linecache.cache['main.py'] = (len(code), None, code.decode('utf-8', 'replace').splitlines(True), 'main.py')
    rc = 0
    try:
        c = compile(code, 'main.py', 'exec')
    except (SyntaxError, ValueError) as e:
        traceback.print_exception(type(e), e, None)
        _exit(1)
    try:
        exec(c, m.__dict__)
    except SystemExit as e:
        if e.code is None:
            rc = 0
        elif isinstance(e.code, int):
            rc = e.code
        else:
            sys.stderr.write('%s\n' % (e.code,))
            rc = 1
    except BaseException as e:
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        rc = 1
    _exit(rc)
def _exit(rc):
    # What interpreter shutdown does that a program can observe (join non-daemon threads,
    # atexit handlers, flush), without tearing the inherited interpreter down.
    if 'threading' in sys.modules:
        try:
            sys.modules['threading']._shutdown()
        except BaseException:
            pass
    try:
        import atexit
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except BaseException:
            pass
    os._exit(rc & 255)
def _main():
    n = b''
    while not n.endswith(b'\n'):
        c = os.read(0, 1)
        if not c:
            os._exit(0)
        n += c
    h = json.loads(_rd(int(n)))
    code = _rd(h['code'])
    try:
        for f in h['files']:
            p = '/workspace/' + f['path']
            os.makedirs(os.path.dirname(p), exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, 'wb') as o:
                o.write(_rd(f['size']))
            os.chmod(p, f['mode'])
        data = _rd(h['stdin'])
        os.makedirs('/tmp/.wflo', 0o700, exist_ok=True)
        if data:
            with open('/tmp/.wflo/stdin', 'wb') as o:
                o.write(data)
            fd = os.open('/tmp/.wflo/stdin', os.O_RDONLY)
            os.unlink('/tmp/.wflo/stdin')
        else:
            fd = os.open('/dev/null', os.O_RDONLY)
        if h['lang'] == 'bash':
            with open('/tmp/.wflo/main.sh', 'wb') as o:
                o.write(code)
    except OSError as e:
        sys.stderr.write('wflo-sandbox: could not prepare the program: %s\n' % e)
        sys.stderr.flush()
        _end(h['nonce'], 125)
    pid = os.fork()
    if pid == 0:
        try:
            _child(h, code, fd)
        except BaseException:
            traceback.print_exc()
        os._exit(125)
    os.close(fd)
    rc = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    _end(h['nonce'], rc if rc >= 0 else 128 - rc)
_main()
"#;

/// The bytes written to the container's stdin for `req`.
pub(crate) fn encode(req: &ExecRequest, nonce: &str) -> Vec<u8> {
    let files: Vec<serde_json::Value> = req
        .files
        .iter()
        .map(|(path, data, mode)| serde_json::json!({"path": path, "size": data.len(), "mode": mode}))
        .collect();
    let header = serde_json::json!({
        "lang": req.language.as_str(),
        "nonce": nonce,
        "env": req.env,
        "files": files,
        "code": req.code.len(),
        "stdin": req.stdin.len(),
    })
    .to_string();
    let body: usize =
        req.code.len() + req.stdin.len() + req.files.iter().map(|f| f.1.len()).sum::<usize>();
    let mut out = Vec::with_capacity(header.len() + body + 16);
    out.extend_from_slice(format!("{}\n", header.len()).as_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&req.code);
    for (_, data, _) in &req.files {
        out.extend_from_slice(data);
    }
    out.extend_from_slice(&req.stdin);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout() {
        let req = ExecRequest::builder("print(1)")
            .stdin("in")
            .env("A", "b")
            .file("d/f.txt", "xyz")
            .build()
            .unwrap();
        let f = encode(&req, "n0");
        let nl = f.iter().position(|&b| b == b'\n').unwrap();
        let n: usize = std::str::from_utf8(&f[..nl]).unwrap().parse().unwrap();
        let header: serde_json::Value = serde_json::from_slice(&f[nl + 1..nl + 1 + n]).unwrap();
        assert_eq!(header["lang"], "python");
        assert_eq!(header["nonce"], "n0");
        assert_eq!(header["env"]["A"], "b");
        assert_eq!(header["files"][0]["path"], "d/f.txt");
        assert_eq!(header["files"][0]["size"], 3);
        assert_eq!(header["files"][0]["mode"], 0o644);
        assert_eq!(&f[nl + 1 + n..], b"print(1)xyzin");
    }

    fn feed_all(chunks: &[&[u8]], cap: usize) -> StreamScan {
        let m = marker("abc");
        let mut s = StreamScan::default();
        for c in chunks {
            s.feed(c, cap, &m);
        }
        s.finish(cap);
        s
    }

    #[test]
    fn trailer_is_found_and_stripped_even_split_over_chunks() {
        let whole = b"hello\n\x1eWFLO-END:abc:3:0\n".to_vec();
        for split in 0..whole.len() {
            let s = feed_all(&[&whole[..split], &whole[split..]], 1000);
            assert_eq!(s.kept, b"hello\n", "split at {split}");
            assert_eq!(
                s.end,
                Some(End {
                    exit_code: 3,
                    oom_kills: 0
                }),
                "split at {split}"
            );
        }
    }

    #[test]
    fn output_without_trailer_or_with_a_wrong_nonce_is_kept() {
        let s = feed_all(
            &[b"a\x1eWFLO-END:xyz:0:0\n", b"b\x1eWFLO-END:abc:zz\n"],
            1000,
        );
        assert_eq!(s.end, None);
        assert_eq!(s.kept, b"a\x1eWFLO-END:xyz:0:0\nb\x1eWFLO-END:abc:zz\n");
        // A marker never followed by a newline does not hold output back forever.
        let long = [b"\x1eWFLO-END:abc:".as_slice(), &[b'9'; 100]].concat();
        let s = feed_all(&[&long], 1000);
        assert_eq!(s.kept, long);
    }

    #[test]
    fn cap_applies_before_the_trailer() {
        let s = feed_all(&[b"0123456789", b"\x1eWFLO-END:abc:0:0\n"], 4);
        assert_eq!(s.kept, b"0123");
        assert!(s.truncated);
        assert!(s.end.is_some());
        let s = feed_all(&[b"0123\x1eWFLO-END:abc:0:0\n"], 4);
        assert!(!s.truncated, "exactly the cap is not truncated");
        // Output after the trailer (a leftover background process) is ignored.
        let s = feed_all(&[b"x\x1eWFLO-END:abc:0:0\nlate"], 100);
        assert_eq!(s.kept, b"x");
    }
}
