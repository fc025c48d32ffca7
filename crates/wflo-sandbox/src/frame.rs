//! How a program reaches the container: one frame written to the container's stdin.
//!
//! The container's command is a fixed bootstrap (`python3 -c BOOTSTRAP`, the same for every
//! request, so a warm container can wait for any program). It reads
//! `<header length>\n<header JSON><code><file 1>...<file n><stdin>` from stdin, places the files
//! in /workspace, makes the given stdin the program's fd 0 (from a file on the /tmp tmpfs, so the
//! program never depends on the attach stream closing), replaces the environment with the
//! request's, and runs the code: Python in the bootstrap's own interpreter (already started in a
//! warm container), bash by `execv`. The code, env values and stdin are never in the container's
//! configuration, so `docker inspect` does not show them.

use crate::ExecRequest;

// Exit code 125 (with a `wflo-sandbox: could not prepare the program` line on stderr) means
// the bootstrap could not place the files or stdin (e.g. over the tmpfs sizes).
pub(crate) const BOOTSTRAP: &str = r#"import os, sys, json, types, builtins, linecache, traceback
def _rd(n):
    b = bytearray()
    while len(b) < n:
        c = os.read(0, min(n - len(b), 1 << 20))
        if not c:
            os._exit(0)
        b += c
    return bytes(b)
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
        if data:
            os.makedirs('/tmp/.wflo', 0o700, exist_ok=True)
            p = '/tmp/.wflo/stdin'
            with open(p, 'wb') as o:
                o.write(data)
            fd = os.open(p, os.O_RDONLY)
            os.unlink(p)
        else:
            fd = os.open('/dev/null', os.O_RDONLY)
        os.dup2(fd, 0)
        os.close(fd)
        os.environ.clear()
        os.environ.update({'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
                           'HOME': '/workspace', 'LANG': 'C.UTF-8',
                           'PYTHONUNBUFFERED': '1', 'PYTHONDONTWRITEBYTECODE': '1'})
        os.environ.update(h['env'])
        os.chdir('/workspace')
        if h['lang'] == 'bash':
            os.makedirs('/tmp/.wflo', 0o700, exist_ok=True)
            p = '/tmp/.wflo/main.sh'
            with open(p, 'wb') as o:
                o.write(code)
            os.execv('/bin/bash', ['bash', p])
    except OSError as e:
        sys.stderr.write('wflo-sandbox: could not prepare the program: %s\n' % e)
        sys.stderr.flush()
        os._exit(125)
    m = types.ModuleType('__main__')
    m.__file__ = '/workspace/main.py'
    m.__builtins__ = builtins
    sys.modules['__main__'] = m
    sys.argv = ['main.py']
    sys.path[0] = '/workspace'
    linecache.cache['main.py'] = (len(code), None, code.decode('utf-8', 'replace').splitlines(True), 'main.py')
    try:
        c = compile(code, 'main.py', 'exec')
    except (SyntaxError, ValueError) as e:
        traceback.print_exception(type(e), e, None)
        sys.exit(1)
    try:
        exec(c, m.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        sys.exit(1)
_main()
"#;

/// The bytes written to the container's stdin for `req`.
pub(crate) fn encode(req: &ExecRequest) -> Vec<u8> {
    let files: Vec<serde_json::Value> = req
        .files
        .iter()
        .map(|(path, data, mode)| serde_json::json!({"path": path, "size": data.len(), "mode": mode}))
        .collect();
    let header = serde_json::json!({
        "lang": req.language.as_str(),
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
        let f = encode(&req);
        let nl = f.iter().position(|&b| b == b'\n').unwrap();
        let n: usize = std::str::from_utf8(&f[..nl]).unwrap().parse().unwrap();
        let header: serde_json::Value = serde_json::from_slice(&f[nl + 1..nl + 1 + n]).unwrap();
        assert_eq!(header["lang"], "python");
        assert_eq!(header["env"]["A"], "b");
        assert_eq!(header["files"][0]["path"], "d/f.txt");
        assert_eq!(header["files"][0]["size"], 3);
        assert_eq!(header["files"][0]["mode"], 0o644);
        assert_eq!(&f[nl + 1 + n..], b"print(1)xyzin");
    }
}
