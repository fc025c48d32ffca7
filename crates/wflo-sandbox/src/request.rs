use crate::config::{check_cpus, check_memory, check_timeout, positive_u64};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The most environment variables a request may set (besides the fixed `PATH`, `HOME`, `LANG`
/// and Python switches). Each is set before the program starts; thousands would spend the
/// timeout on setup.
pub const MAX_ENV_VARS: usize = 1024;

/// The largest one environment variable may be, counted as `NAME=VALUE` plus its terminating
/// NUL: 128 KiB, Linux's limit for one string handed to `exec` (a bash program is started by
/// `exec`; a larger variable could not reach it).
pub const MAX_ENV_VAR_BYTES: usize = 128 * 1024;

/// The largest the request's environment may be in total, each variable counted as
/// `NAME=VALUE` plus its NUL: 1 MiB, half of what Linux lets `exec` pass with the usual 8 MiB
/// stack limit (the rest is room for the fixed variables and the argument list).
pub const MAX_ENV_BYTES: usize = 1024 * 1024;

/// The most files a request may place in /workspace.
pub const MAX_FILES: usize = 1024;

/// The largest the request's /workspace files may be in total: 32 MiB (half of the default
/// /workspace tmpfs, [`crate::Limits::workspace_bytes`]). They travel with the program over
/// the container's stdin and are held in memory until it starts.
pub const MAX_FILES_BYTES: usize = 32 * 1024 * 1024;

/// The largest a request's stdin may be: 16 MiB. It is stored on the /tmp tmpfs
/// ([`crate::Limits::tmp_bytes`]) before the program starts.
pub const MAX_STDIN_BYTES: usize = 16 * 1024 * 1024;

/// Languages a sandbox runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Language {
    /// Python 3 (the image's `python3`).
    Python,
    /// Bash.
    Bash,
}

impl Language {
    /// The lower-case name (`python`, `bash`).
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Bash => "bash",
        }
    }
}

impl AsRef<str> for Language {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Language {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "python" | "python3" | "py" => Ok(Language::Python),
            "bash" | "sh" | "shell" => Ok(Language::Bash),
            _ => Err(Error::UnknownLanguage { name: s.into() }),
        }
    }
}

/// Whether the container gets a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum NetworkPolicy {
    /// No network at all (only a loopback interface). The default.
    #[default]
    None,
    /// Docker's default bridge: the container can reach the host and whatever the host
    /// routes to. Only when a step needs it.
    Bridge,
}

/// One program to run. Build with [`ExecRequest::builder`]; `build` refuses bad input before
/// any container exists.
///
/// Input caps, checked by [`ExecRequestBuilder::build`] ([`Error::InputTooLarge`] names the cap):
///
/// | input | cap |
/// |---|---|
/// | environment variables | [`MAX_ENV_VARS`] (1024) variables, each `NAME=VALUE` at most [`MAX_ENV_VAR_BYTES`] (128 KiB), [`MAX_ENV_BYTES`] (1 MiB) in total |
/// | /workspace files | [`MAX_FILES`] (1024) files, [`MAX_FILES_BYTES`] (32 MiB) in total |
/// | stdin | [`MAX_STDIN_BYTES`] (16 MiB) |
///
/// Larger data belongs in a file (environment values) or in several executions; files and
/// stdin must also fit the /workspace and /tmp tmpfs sizes of the request's [`crate::Limits`],
/// else the program does not start (exit code 125).
#[derive(Clone)]
pub struct ExecRequest {
    pub(crate) code: Vec<u8>,
    pub(crate) language: Language,
    pub(crate) stdin: Vec<u8>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) files: Vec<(String, Vec<u8>, u32)>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) memory_bytes: Option<u64>,
    pub(crate) cpus: Option<f64>,
    pub(crate) pids: Option<u32>,
    pub(crate) output_bytes: Option<usize>,
    pub(crate) network: NetworkPolicy,
}

impl fmt::Debug for ExecRequest {
    // The code, stdin, env values and file contents may be large or secret: not printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecRequest")
            .field("language", &self.language)
            .field("code_bytes", &self.code.len())
            .field("stdin_bytes", &self.stdin.len())
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field(
                "files",
                &self.files.iter().map(|f| &f.0).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .field("memory_bytes", &self.memory_bytes)
            .field("cpus", &self.cpus)
            .field("pids", &self.pids)
            .field("output_bytes", &self.output_bytes)
            .field("network", &self.network)
            .finish()
    }
}

impl ExecRequest {
    /// A Python program; change the language with [`ExecRequestBuilder::language`].
    pub fn builder(code: impl Into<Vec<u8>>) -> ExecRequestBuilder {
        ExecRequestBuilder {
            code: code.into(),
            language: Ok(Language::Python),
            stdin: Vec::new(),
            env: Vec::new(),
            files: Vec::new(),
            timeout: None,
            memory_bytes: None,
            cpus: None,
            pids: None,
            output_bytes: None,
            network: NetworkPolicy::None,
        }
    }

    /// The request's language.
    pub fn language(&self) -> Language {
        self.language
    }

    /// The request's network policy.
    pub fn network(&self) -> NetworkPolicy {
        self.network
    }

    /// The timeout the request asked for, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

/// Builder of [`ExecRequest`].
#[derive(Debug, Clone)]
pub struct ExecRequestBuilder {
    code: Vec<u8>,
    language: std::result::Result<Language, String>,
    stdin: Vec<u8>,
    env: Vec<(String, String)>,
    files: Vec<(String, Vec<u8>, u32)>,
    timeout: Option<Duration>,
    memory_bytes: Option<u64>,
    cpus: Option<f64>,
    pids: Option<u32>,
    output_bytes: Option<usize>,
    network: NetworkPolicy,
}

impl ExecRequestBuilder {
    /// The language: a [`Language`] or its name (`"python"`, `"bash"`); an unknown name is
    /// refused by `build`.
    pub fn language(mut self, language: impl AsRef<str>) -> Self {
        let name = language.as_ref();
        self.language = name.parse::<Language>().map_err(|_| name.to_string());
        self
    }

    /// Bytes the program reads on its standard input (default none); at most
    /// [`MAX_STDIN_BYTES`].
    pub fn stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.stdin = stdin.into();
        self
    }

    /// An environment variable. Only variables given here are set in the sandbox (plus
    /// `PATH`, `HOME`, `LANG` and Python's unbuffered/no-bytecode switches); nothing of the
    /// host's environment is passed. Values are not visible in `docker inspect`. At most
    /// [`MAX_ENV_VARS`] variables, each at most [`MAX_ENV_VAR_BYTES`], [`MAX_ENV_BYTES`] in
    /// total; a name given twice keeps the last value.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// A file placed at `/workspace/<path>` before the program starts (mode 0644). At most
    /// [`MAX_FILES`] files, [`MAX_FILES_BYTES`] in total.
    pub fn file(self, path: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        self.file_with_mode(path, contents, 0o644)
    }

    /// A file placed at `/workspace/<path>` with a mode (e.g. 0o755).
    pub fn file_with_mode(
        mut self,
        path: impl Into<String>,
        contents: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Self {
        self.files.push((path.into(), contents.into(), mode));
        self
    }

    /// Wall-clock timeout; at most the runtime's maximum (default: the runtime's default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Memory limit in bytes (memory + swap are both set to it).
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = Some(bytes);
        self
    }

    /// CPU limit, e.g. 0.5.
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = Some(cpus);
        self
    }

    /// Process/thread limit.
    pub fn pids(mut self, pids: u32) -> Self {
        self.pids = Some(pids);
        self
    }

    /// Bytes kept of stdout and, separately, of stderr.
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_bytes = Some(bytes);
        self
    }

    /// Network policy (default [`NetworkPolicy::None`]).
    pub fn network(mut self, network: NetworkPolicy) -> Self {
        self.network = network;
        self
    }

    /// Validates and returns the request: the language, limits, environment names, file paths
    /// and the input caps ([`Error::InputTooLarge`], see [`ExecRequest`]). The runtime checks
    /// the timeout against its maximum before starting anything.
    pub fn build(self) -> Result<ExecRequest> {
        let language = self
            .language
            .map_err(|name| Error::UnknownLanguage { name })?;
        if let Some(t) = self.timeout {
            check_timeout(t)?;
        }
        if let Some(m) = self.memory_bytes {
            check_memory(m)?;
        }
        if let Some(c) = self.cpus {
            check_cpus(c)?;
        }
        if let Some(p) = self.pids {
            positive_u64("pids", u64::from(p))?;
        }
        if let Some(o) = self.output_bytes {
            positive_u64("output", o as u64)?;
        }
        let mut env = BTreeMap::new();
        for (name, value) in self.env {
            if !is_identifier(&name) {
                return Err(Error::InvalidEnvName { name });
            }
            if value.contains('\0') {
                return Err(Error::InvalidEnvName {
                    name: format!("{name} (its value contains a NUL byte)"),
                });
            }
            env.insert(name, value);
        }
        check_inputs(&env, &self.files, self.stdin.len())?;
        let mut seen = std::collections::HashSet::new();
        for (path, _, mode) in &self.files {
            check_file_path(path)?;
            if *mode > 0o777 {
                return Err(Error::InvalidFile {
                    path: path.clone(),
                    reason: "mode must be at most 0o777 (no setuid, setgid or sticky bits)",
                });
            }
            if !seen.insert(path.as_str()) {
                return Err(Error::InvalidFile {
                    path: path.clone(),
                    reason: "given twice",
                });
            }
        }
        Ok(ExecRequest {
            code: self.code,
            language,
            stdin: self.stdin,
            env,
            files: self.files,
            timeout: self.timeout,
            memory_bytes: self.memory_bytes,
            cpus: self.cpus,
            pids: self.pids,
            output_bytes: self.output_bytes,
            network: self.network,
        })
    }
}

/// `NAME=VALUE` plus the NUL that ends it in the program's environment block.
fn env_entry_bytes(name: &str, value: &str) -> usize {
    name.len() + 1 + value.len() + 1
}

fn check_inputs(
    env: &BTreeMap<String, String>,
    files: &[(String, Vec<u8>, u32)],
    stdin: usize,
) -> Result<()> {
    const ENV_HINT: &str = "pass large or many values in a workspace file or on stdin";
    const DATA_HINT: &str = "send less data per execution (split the work over several)";
    let over = |what: String, actual, cap, unit, cap_name, hint| {
        Err(Error::InputTooLarge {
            what,
            actual,
            cap,
            unit,
            cap_name,
            hint,
        })
    };
    if env.len() > MAX_ENV_VARS {
        return over(
            "the number of environment variables".into(),
            env.len(),
            MAX_ENV_VARS,
            "",
            "MAX_ENV_VARS",
            ENV_HINT,
        );
    }
    let mut env_total = 0;
    for (name, value) in env {
        let bytes = env_entry_bytes(name, value);
        if bytes > MAX_ENV_VAR_BYTES {
            return over(
                format!("environment variable `{name}` (NAME=VALUE)"),
                bytes,
                MAX_ENV_VAR_BYTES,
                " bytes",
                "MAX_ENV_VAR_BYTES",
                ENV_HINT,
            );
        }
        env_total += bytes;
    }
    if env_total > MAX_ENV_BYTES {
        return over(
            "the environment in total".into(),
            env_total,
            MAX_ENV_BYTES,
            " bytes",
            "MAX_ENV_BYTES",
            ENV_HINT,
        );
    }
    if files.len() > MAX_FILES {
        return over(
            "the number of workspace files".into(),
            files.len(),
            MAX_FILES,
            "",
            "MAX_FILES",
            "pack them into one archive file and unpack it in the program",
        );
    }
    let files_total = files
        .iter()
        .fold(0usize, |sum, f| sum.saturating_add(f.1.len()));
    if files_total > MAX_FILES_BYTES {
        return over(
            "the workspace files in total".into(),
            files_total,
            MAX_FILES_BYTES,
            " bytes",
            "MAX_FILES_BYTES",
            DATA_HINT,
        );
    }
    if stdin > MAX_STDIN_BYTES {
        return over(
            "stdin".into(),
            stdin,
            MAX_STDIN_BYTES,
            " bytes",
            "MAX_STDIN_BYTES",
            DATA_HINT,
        );
    }
    Ok(())
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_file_path(path: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidFile {
            path: path.into(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty path");
    }
    if path.starts_with('/') {
        return bad("must be relative to /workspace");
    }
    if path.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if path.contains('\0') || path.contains('\\') {
        return bad("contains a NUL byte or a backslash");
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return bad("empty, '.' or '..' path components are not allowed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_language_is_refused() {
        let err = ExecRequest::builder("x")
            .language("ruby")
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::UnknownLanguage { ref name } if name == "ruby"));
        assert!(err.to_string().contains("use python or bash"));
        let ok = ExecRequest::builder("echo")
            .language(Language::Bash)
            .build()
            .unwrap();
        assert_eq!(ok.language(), Language::Bash);
        assert_eq!("Python3".parse::<Language>().unwrap(), Language::Python);
    }

    #[test]
    fn zero_and_negative_limits_are_refused() {
        let cases: Vec<(ExecRequestBuilder, &str)> = vec![
            (ExecRequest::builder("").memory_bytes(0), "memory"),
            (ExecRequest::builder("").memory_bytes(1024), "memory"),
            (ExecRequest::builder("").cpus(0.0), "cpus"),
            (ExecRequest::builder("").cpus(-0.5), "cpus"),
            (ExecRequest::builder("").cpus(f64::NAN), "cpus"),
            (ExecRequest::builder("").pids(0), "pids"),
            (ExecRequest::builder("").output_limit(0), "output"),
            (ExecRequest::builder("").timeout(Duration::ZERO), "timeout"),
        ];
        for (b, which) in cases {
            match b.build() {
                Err(Error::InvalidLimit { limit, .. }) => assert_eq!(limit, which),
                other => panic!("{which}: expected InvalidLimit, got {other:?}"),
            }
        }
    }

    #[test]
    fn env_names_must_be_identifiers() {
        for bad in ["", "1A", "A-B", "A B", "A=B", "É"] {
            let err = ExecRequest::builder("").env(bad, "v").build().unwrap_err();
            assert!(matches!(err, Error::InvalidEnvName { .. }), "{bad}: {err}");
        }
        let ok = ExecRequest::builder("")
            .env("_A1", "v")
            .env("PATHLIKE", "x")
            .build()
            .unwrap();
        assert_eq!(ok.env.len(), 2);
    }

    #[test]
    fn file_paths_stay_inside_workspace() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/"] {
            let err = ExecRequest::builder("").file(bad, "x").build().unwrap_err();
            assert!(matches!(err, Error::InvalidFile { .. }), "{bad}: {err}");
        }
        let err = ExecRequest::builder("")
            .file_with_mode("a", "x", 0o4755)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidFile { .. }));
        let err = ExecRequest::builder("")
            .file("a", "x")
            .file("a", "y")
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidFile { .. }));
        assert!(
            ExecRequest::builder("")
                .file("data/in.csv", "1,2")
                .build()
                .is_ok()
        );
    }

    fn over_cap(b: ExecRequestBuilder) -> (String, usize, usize, &'static str, String) {
        match b.build() {
            Err(
                ref e @ Error::InputTooLarge {
                    ref what,
                    actual,
                    cap,
                    cap_name,
                    ..
                },
            ) => (what.clone(), actual, cap, cap_name, e.to_string()),
            other => panic!("expected InputTooLarge, got {other:?}"),
        }
    }

    /// Variables `V00000..` whose `NAME=VALUE\0` entries are `each` bytes long.
    fn with_env(mut b: ExecRequestBuilder, n: usize, each: usize) -> ExecRequestBuilder {
        for i in 0..n {
            let name = format!("V{i:05}");
            let value = "x".repeat(each - name.len() - 2);
            b = b.env(name, value);
        }
        b
    }

    #[test]
    fn env_count_is_capped() {
        let ok = with_env(ExecRequest::builder(""), MAX_ENV_VARS, 8)
            .build()
            .unwrap();
        assert_eq!(ok.env.len(), MAX_ENV_VARS);
        // The case: 100,000 variables are refused at once, not set up in the sandbox.
        let started = std::time::Instant::now();
        let (what, actual, cap, cap_name, text) =
            over_cap(with_env(ExecRequest::builder(""), 100_000, 8));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(what, "the number of environment variables");
        assert_eq!(
            (actual, cap, cap_name),
            (100_000, MAX_ENV_VARS, "MAX_ENV_VARS")
        );
        assert_eq!(
            text,
            "the number of environment variables is 100000, over the cap of 1024 \
             (MAX_ENV_VARS); pass large or many values in a workspace file or on stdin"
        );
        let (_, actual, ..) = over_cap(with_env(ExecRequest::builder(""), MAX_ENV_VARS + 1, 8));
        assert_eq!(actual, MAX_ENV_VARS + 1);
        // A name given twice is one variable (the last value wins).
        let mut b = with_env(ExecRequest::builder(""), MAX_ENV_VARS, 8);
        b = b.env("V00000", "again");
        let ok = b.build().unwrap();
        assert_eq!(ok.env.len(), MAX_ENV_VARS);
        assert_eq!(ok.env["V00000"], "again");
    }

    #[test]
    fn one_env_variable_is_capped_and_named() {
        let at_cap = with_env(ExecRequest::builder(""), 1, MAX_ENV_VAR_BYTES)
            .build()
            .unwrap();
        assert_eq!(
            env_entry_bytes("V00000", &at_cap.env["V00000"]),
            MAX_ENV_VAR_BYTES
        );
        let (what, actual, cap, cap_name, text) =
            over_cap(with_env(ExecRequest::builder(""), 1, MAX_ENV_VAR_BYTES + 1));
        assert_eq!(what, "environment variable `V00000` (NAME=VALUE)");
        assert_eq!(
            (actual, cap, cap_name),
            (
                MAX_ENV_VAR_BYTES + 1,
                MAX_ENV_VAR_BYTES,
                "MAX_ENV_VAR_BYTES"
            )
        );
        assert!(text.starts_with("environment variable `V00000` (NAME=VALUE) is 131073 bytes, over the cap of 131072 bytes (MAX_ENV_VAR_BYTES); "), "{text}");
        // The case: a 1 MB value.
        let (what, actual, ..) =
            over_cap(ExecRequest::builder("").env("BIG", "v".repeat(1_000_000)));
        assert_eq!(what, "environment variable `BIG` (NAME=VALUE)");
        assert_eq!(actual, 1_000_000 + "BIG".len() + 2);
    }

    #[test]
    fn the_environment_in_total_is_capped() {
        // Eight variables of the largest size are exactly the total cap.
        let n = MAX_ENV_BYTES / MAX_ENV_VAR_BYTES;
        let ok = with_env(ExecRequest::builder(""), n, MAX_ENV_VAR_BYTES)
            .build()
            .unwrap();
        let total: usize = ok.env.iter().map(|(k, v)| env_entry_bytes(k, v)).sum();
        assert_eq!(total, MAX_ENV_BYTES);
        let b = with_env(ExecRequest::builder(""), n, MAX_ENV_VAR_BYTES).env("ONE", "");
        let (what, actual, cap, cap_name, text) = over_cap(b);
        assert_eq!(what, "the environment in total");
        assert_eq!(
            (actual, cap, cap_name),
            (MAX_ENV_BYTES + 5, MAX_ENV_BYTES, "MAX_ENV_BYTES")
        );
        assert!(text.contains("in a workspace file or on stdin"), "{text}");
    }

    #[test]
    fn workspace_files_are_capped_in_number_and_size() {
        let many = |n: usize| {
            (0..n).fold(ExecRequest::builder(""), |b, i| {
                b.file(format!("f{i}"), "x")
            })
        };
        assert_eq!(many(MAX_FILES).build().unwrap().files.len(), MAX_FILES);
        let (what, actual, cap, cap_name, text) = over_cap(many(MAX_FILES + 1));
        assert_eq!(what, "the number of workspace files");
        assert_eq!(
            (actual, cap, cap_name),
            (MAX_FILES + 1, MAX_FILES, "MAX_FILES")
        );
        assert!(text.contains("one archive file"), "{text}");

        let half = MAX_FILES_BYTES / 2;
        let ok = ExecRequest::builder("")
            .file("a", vec![0u8; half])
            .file("b", vec![0u8; MAX_FILES_BYTES - half])
            .build();
        assert!(ok.is_ok(), "exactly the cap is allowed");
        let (what, actual, cap, cap_name, text) = over_cap(
            ExecRequest::builder("")
                .file("a", vec![0u8; half])
                .file("b", vec![0u8; MAX_FILES_BYTES - half + 1]),
        );
        assert_eq!(what, "the workspace files in total");
        assert_eq!(
            (actual, cap, cap_name),
            (MAX_FILES_BYTES + 1, MAX_FILES_BYTES, "MAX_FILES_BYTES")
        );
        assert!(
            text.contains("bytes, over the cap of 33554432 bytes"),
            "{text}"
        );
    }

    #[test]
    fn stdin_is_capped() {
        assert!(
            ExecRequest::builder("")
                .stdin(vec![b'x'; MAX_STDIN_BYTES])
                .build()
                .is_ok()
        );
        let (what, actual, cap, cap_name, text) =
            over_cap(ExecRequest::builder("").stdin(vec![b'x'; MAX_STDIN_BYTES + 1]));
        assert_eq!(what, "stdin");
        assert_eq!(
            (actual, cap, cap_name),
            (MAX_STDIN_BYTES + 1, MAX_STDIN_BYTES, "MAX_STDIN_BYTES")
        );
        assert_eq!(
            text,
            "stdin is 16777217 bytes, over the cap of 16777216 bytes (MAX_STDIN_BYTES); \
             send less data per execution (split the work over several)"
        );
    }

    #[test]
    fn debug_hides_code_and_env_values() {
        let r = ExecRequest::builder("print('TOPSECRET')")
            .env("KEY", "hunter2")
            .build()
            .unwrap();
        let s = format!("{r:?}");
        assert!(!s.contains("TOPSECRET") && !s.contains("hunter2"), "{s}");
        assert!(s.contains("KEY"));
    }
}
