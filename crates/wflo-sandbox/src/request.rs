use crate::config::{check_cpus, check_memory, check_timeout, positive_u64};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

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

    /// Bytes the program reads on its standard input (default none).
    pub fn stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.stdin = stdin.into();
        self
    }

    /// An environment variable. Only variables given here are set in the sandbox (plus
    /// `PATH`, `HOME`, `LANG` and Python's unbuffered/no-bytecode switches); nothing of the
    /// host's environment is passed. Values are not visible in `docker inspect`.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// A file placed at `/workspace/<path>` before the program starts (mode 0644).
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

    /// Validates and returns the request. The runtime checks the timeout against its maximum
    /// before starting anything.
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
