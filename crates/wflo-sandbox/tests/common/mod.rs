#![allow(dead_code, unreachable_pub)]

use std::time::Duration;
use wflo_sandbox::{
    ExecRequest, ExecutionResult, SandboxConfig, SandboxConfigBuilder, SandboxRuntime,
};

pub fn image() -> String {
    std::env::var("WFLO_TEST_SANDBOX_IMAGE").expect(
        "WFLO_TEST_SANDBOX_IMAGE is not set; run `cargo xtask itest wflo-sandbox` \
         (it starts Docker, builds the sandbox image and exports the variable)",
    )
}

/// A scope of its own per runtime, so one test's sweep never touches another's containers.
pub fn unique_scope(tag: &str) -> String {
    format!("it-{tag}-{}", uuid::Uuid::now_v7().simple())
}

/// Cold-only runtime config (no pool) with a private scope.
pub fn config(tag: &str) -> SandboxConfigBuilder {
    SandboxConfig::builder()
        .image(image())
        .scope(unique_scope(tag))
        .pool_size(0)
        .max_timeout(Duration::from_secs(120))
}

pub async fn runtime(b: SandboxConfigBuilder) -> SandboxRuntime {
    SandboxRuntime::new(b.build().expect("valid config"))
        .await
        .expect("the docker engine and the sandbox image are needed; run `cargo xtask itest wflo-sandbox`")
}

pub async fn py(rt: &SandboxRuntime, code: &str) -> ExecutionResult {
    rt.execute(ExecRequest::builder(code).build().unwrap())
        .await
        .expect("execute")
}

/// Shuts the runtime down and asserts that none of its containers is left.
pub async fn finish(rt: SandboxRuntime) {
    rt.shutdown().await;
    let left = rt.list_managed().await.unwrap();
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

/// The docker0 bridge gateway: the host address a bridged container reaches. Docker's own
/// record first (`docker network inspect bridge`), else the bridge interface's address.
pub fn bridge_gateway() -> String {
    let run = |cmd: &str, args: &[&str]| {
        let out = std::process::Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let gw = run(
        "docker",
        &[
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        ],
    );
    if !gw.is_empty() {
        return gw;
    }
    let mut ifname = run(
        "docker",
        &[
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{index .Options \"com.docker.network.bridge.name\"}}",
        ],
    );
    if ifname.is_empty() {
        ifname = "docker0".into();
    }
    let addr = run("ip", &["-4", "-o", "addr", "show", &ifname]);
    let ip = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_default()
        .to_string();
    assert!(
        !ip.is_empty(),
        "no address on docker's bridge {ifname}; is the docker engine running?"
    );
    ip
}

pub fn docker_inspect(id: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["inspect", id])
        .output()
        .expect("run `docker inspect`");
    assert!(out.status.success(), "docker inspect {id} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
