#![cfg(feature = "integration")]
//! Basic execution, errors, limits, isolation and cleanup against the real Docker engine
//! (the seed's test_sandbox list, plus escape attempts). Run with `cargo xtask itest wflo-sandbox`.

mod common;

use common::{config, finish, py, runtime};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use wflo_sandbox::{Error, ExecRequest, ExecStatus, Language, Limits, NetworkPolicy};

// ---------- basic execution ----------

#[tokio::test]
async fn prints_hello() {
    let rt = runtime(config("hello")).await;
    let r = py(&rt, "print('hello')").await;
    assert_eq!(r.stdout, "hello\n");
    assert_eq!(r.stderr, "");
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.status, ExecStatus::Succeeded);
    assert!(!r.timed_out && !r.oom_killed && !r.warm);
    assert!(r.finished_at >= r.started_at);
    finish(rt).await;
}

#[tokio::test]
async fn several_lines_variables_and_stdlib() {
    let rt = runtime(config("lines")).await;
    let r = py(
        &rt,
        "x = 6\ny = 7\nfor i in range(3):\n    print(i)\nprint(f'{x}*{y}={x*y}')\n",
    )
    .await;
    assert_eq!(r.stdout, "0\n1\n2\n6*7=42\n");
    let r = py(
        &rt,
        "import json, math, datetime, collections, decimal, asyncio, re, hashlib, itertools\n\
         print(json.dumps({'a': [1, 2]}), math.sqrt(16), decimal.Decimal('0.1') + decimal.Decimal('0.2'))\n\
         print(asyncio.run(asyncio.sleep(0, result='async ok')))\n\
         print(hashlib.sha256(b'x').hexdigest()[:8], collections.Counter('aab')['a'])\n",
    )
    .await;
    assert_eq!(r.exit_code, 0, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "{\"a\": [1, 2]} 4.0 0.3\nasync ok\n2d711642 2\n");
    finish(rt).await;
}

#[tokio::test]
async fn stdin_env_and_workspace_files_reach_the_program() {
    let rt = runtime(config("io")).await;
    let r = rt
        .execute(
            ExecRequest::builder(
                "import os, sys, helper\n\
                 data = sys.stdin.read()\n\
                 print(data.upper(), os.environ['GREETING'], open('data/in.csv').read().strip())\n\
                 print(helper.VALUE, os.getcwd(), oct(os.stat('run.sh').st_mode & 0o777))\n",
            )
            .stdin("from stdin")
            .env("GREETING", "hi there")
            .file("data/in.csv", "1,2,3\n")
            .file("helper.py", "VALUE = 41 + 1\n")
            .file_with_mode("run.sh", "echo ran\n", 0o755)
            .build()
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0, "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "FROM STDIN hi there 1,2,3\n42 /workspace 0o755\n");

    let r = rt
        .execute(
            ExecRequest::builder(
                "read line; echo \"got $line\"; echo \"to stderr\" >&2; ./run.sh; echo $NAME; exit 7",
            )
            .language(Language::Bash)
            .stdin("one\ntwo\n")
            .env("NAME", "bash-env")
            .file_with_mode("run.sh", "#!/bin/sh\necho ran\n", 0o755)
            .build()
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, "got one\nran\nbash-env\n");
    assert_eq!(r.stderr, "to stderr\n");
    assert_eq!(r.exit_code, 7);
    assert_eq!(r.status, ExecStatus::Failed);
    assert_eq!(r.language, Language::Bash);
    finish(rt).await;
}

#[tokio::test]
async fn exit_codes_pass_through() {
    let rt = runtime(config("exit")).await;
    let r = py(&rt, "import sys\nprint('bye')\nsys.exit(3)").await;
    assert_eq!((r.exit_code, r.stdout.as_str()), (3, "bye\n"));
    assert_eq!(r.status, ExecStatus::Failed);
    finish(rt).await;
}

// ---------- errors ----------

#[tokio::test]
async fn syntax_runtime_and_import_errors_exit_non_zero_with_traceback_on_stderr() {
    let rt = runtime(config("errors")).await;
    let r = py(&rt, "print('unreached')\ndef f(:\n    pass\n").await;
    assert_ne!(r.exit_code, 0);
    assert_eq!(r.stdout, "", "a syntax error runs nothing");
    assert!(r.stderr.contains("SyntaxError"), "{}", r.stderr);
    assert!(r.stderr.contains("main.py\", line 2"), "{}", r.stderr);

    let r = py(&rt, "print('before')\nx = 1 / 0\n").await;
    assert_ne!(r.exit_code, 0);
    assert_eq!(r.stdout, "before\n");
    assert!(
        r.stderr.starts_with("Traceback (most recent call last):"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("File \"main.py\", line 2"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("x = 1 / 0"),
        "source line shown: {}",
        r.stderr
    );
    assert!(r.stderr.contains("ZeroDivisionError"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("_main"),
        "bootstrap frames hidden: {}",
        r.stderr
    );

    let r = py(&rt, "import no_such_module_xyz\n").await;
    assert_ne!(r.exit_code, 0);
    assert!(
        r.stderr
            .contains("ModuleNotFoundError: No module named 'no_such_module_xyz'"),
        "{}",
        r.stderr
    );
    assert_eq!(r.status, ExecStatus::Failed);
    finish(rt).await;
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_container_starts() {
    let rt = runtime(
        config("refuse")
            .default_timeout(Duration::from_secs(5))
            .max_timeout(Duration::from_secs(10)),
    )
    .await;
    let err = rt
        .execute(
            ExecRequest::builder("print(1)")
                .timeout(Duration::from_secs(11))
                .build()
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TimeoutTooLong { .. }), "{err}");
    assert!(matches!(
        ExecRequest::builder("").language("cobol").build(),
        Err(Error::UnknownLanguage { .. })
    ));
    assert!(matches!(
        ExecRequest::builder("").cpus(-1.0).build(),
        Err(Error::InvalidLimit { .. })
    ));
    assert!(matches!(
        ExecRequest::builder("").memory_bytes(0).build(),
        Err(Error::InvalidLimit { .. })
    ));
    assert!(matches!(
        ExecRequest::builder("").env("BAD-NAME", "x").build(),
        Err(Error::InvalidEnvName { .. })
    ));
    assert!(
        rt.list_managed().await.unwrap().is_empty(),
        "nothing was started"
    );
    finish(rt).await;
}

#[tokio::test]
async fn inputs_over_the_caps_start_no_container_and_inputs_at_the_caps_run() {
    use wflo_sandbox::{
        MAX_ENV_BYTES, MAX_ENV_VAR_BYTES, MAX_ENV_VARS, MAX_FILES, MAX_FILES_BYTES, MAX_STDIN_BYTES,
    };
    let rt = runtime(config("caps").default_timeout(Duration::from_secs(60))).await;
    // Over the caps: refused at once (100,000 variables used to spend the whole timeout being
    // set up; a 1 MB variable made bash launches fail with the bootstrap's traceback).
    let started = Instant::now();
    let many = (0..100_000).fold(ExecRequest::builder("print(1)"), |b, i| {
        b.env(format!("V{i}"), "x")
    });
    let refusals = [
        many.build().unwrap_err(),
        ExecRequest::builder("echo $BIG")
            .language(Language::Bash)
            .env("BIG", "v".repeat(1_000_000))
            .build()
            .unwrap_err(),
        ExecRequest::builder("")
            .stdin(vec![0u8; MAX_STDIN_BYTES + 1])
            .build()
            .unwrap_err(),
        ExecRequest::builder("")
            .file("big", vec![0u8; MAX_FILES_BYTES + 1])
            .build()
            .unwrap_err(),
    ];
    assert!(started.elapsed() < Duration::from_secs(5));
    let caps: Vec<&str> = refusals
        .iter()
        .map(|e| match e {
            Error::InputTooLarge { cap_name, .. } => *cap_name,
            other => panic!("expected InputTooLarge, got {other}"),
        })
        .collect();
    assert_eq!(
        caps,
        [
            "MAX_ENV_VARS",
            "MAX_ENV_VAR_BYTES",
            "MAX_STDIN_BYTES",
            "MAX_FILES_BYTES"
        ]
    );
    assert!(
        rt.list_managed().await.unwrap().is_empty(),
        "no container was created"
    );

    // At the caps the program runs: bash gets a full environment through exec (eight
    // variables of the largest size make the total cap), ...
    let n = MAX_ENV_BYTES / MAX_ENV_VAR_BYTES;
    let mut bash = ExecRequest::builder("for v in ${!BIG*}; do echo -n \"${#v}:${#BIG0} \"; done")
        .language(Language::Bash);
    for i in 0..n {
        let name = format!("BIG{i}");
        let value = "v".repeat(MAX_ENV_VAR_BYTES - name.len() - 2);
        bash = bash.env(name, value);
    }
    let r = rt.execute(bash.build().unwrap()).await.unwrap();
    assert_eq!(r.exit_code, 0, "stderr: {}", r.stderr);
    let value_len = MAX_ENV_VAR_BYTES - "BIG0".len() - 2;
    assert_eq!(r.stdout, format!("4:{value_len} ").repeat(n));
    // ... Python gets the largest number of variables promptly, and the largest number of
    // files and stdin all arrive.
    let mut py_req = ExecRequest::builder(
        "import os, sys\n\
         names = [k for k in os.environ if k.startswith('E')]\n\
         files = os.listdir('/workspace/d')\n\
         size = sum(os.path.getsize('/workspace/d/' + f) for f in files)\n\
         print(len(names), len(files), size, len(sys.stdin.buffer.read()))",
    )
    .stdin(vec![b's'; MAX_STDIN_BYTES]);
    for i in 0..MAX_ENV_VARS {
        py_req = py_req.env(format!("E{i}"), "x");
    }
    let each = MAX_FILES_BYTES / MAX_FILES;
    for i in 0..MAX_FILES {
        py_req = py_req.file(format!("d/f{i}"), vec![b'f'; each]);
    }
    let r = rt.execute(py_req.build().unwrap()).await.unwrap();
    assert_eq!(r.exit_code, 0, "stderr: {}", r.stderr);
    assert_eq!(
        r.stdout,
        format!("{MAX_ENV_VARS} {MAX_FILES} {MAX_FILES_BYTES} {MAX_STDIN_BYTES}\n")
    );
    assert!(r.duration < Duration::from_secs(10), "ran {:?}", r.duration);
    rt.flush().await;
    assert!(rt.list_managed().await.unwrap().is_empty());
    finish(rt).await;
}

#[tokio::test]
async fn a_missing_image_is_a_typed_error_naming_the_xtask_command() {
    let err = wflo_sandbox::SandboxRuntime::new(
        config("noimage")
            .image("wflo-sandbox-does-not-exist:0")
            .build()
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::ImageMissing { .. }), "{err}");
    assert!(
        err.to_string().contains("cargo xtask sandbox-image"),
        "{err}"
    );
}

// ---------- timeouts and cleanup ----------

#[tokio::test]
async fn sleep_60_with_a_2s_timeout_is_killed_within_about_3s_and_leaves_no_container() {
    let rt = runtime(config("timeout")).await;
    let started = Instant::now();
    let r = rt
        .execute(
            ExecRequest::builder(
                "import time\nprint('started', flush=True)\ntime.sleep(60)\nprint('never')",
            )
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
        )
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(r.timed_out);
    assert_eq!(r.status, ExecStatus::TimedOut);
    assert_eq!(r.exit_code, 137, "killed with SIGKILL");
    assert_eq!(r.stdout, "started\n", "output before the kill is kept");
    assert!(
        took < Duration::from_millis(3500),
        "timed out after {took:?}"
    );
    assert!(r.duration >= Duration::from_secs(2) && r.duration < Duration::from_secs(3));
    rt.flush().await; // removal runs in the background by default
    assert!(
        rt.list_managed().await.unwrap().is_empty(),
        "the killed container is removed"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    finish(rt).await;
}

#[tokio::test]
async fn timeout_as_error_when_configured() {
    let rt = runtime(config("timeout-err").timeout_is_error(true)).await;
    let err = rt
        .execute(
            ExecRequest::builder("while True: pass")
                .timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
        )
        .await
        .unwrap_err();
    match err {
        Error::TimedOut(r) => assert!(r.timed_out && r.exit_code == 137),
        other => panic!("expected TimedOut, got {other}"),
    }
    finish(rt).await;
}

#[tokio::test]
async fn fast_code_finishes_quickly() {
    let rt = runtime(config("fast")).await;
    let started = Instant::now();
    let r = py(&rt, "print(sum(range(1000)))").await;
    assert_eq!(r.stdout, "499500\n");
    assert!(r.duration < Duration::from_secs(1), "ran {:?}", r.duration);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "end to end {:?}",
        started.elapsed()
    );
    finish(rt).await;
}

#[tokio::test]
async fn no_container_left_after_success_error_and_timeout() {
    let rt = runtime(config("noleft")).await;
    let ok = py(&rt, "print(1)").await;
    let err = py(&rt, "raise SystemExit(5)").await;
    let to = rt
        .execute(
            ExecRequest::builder("import time; time.sleep(30)")
                .timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!((ok.exit_code, err.exit_code, to.timed_out), (0, 5, true));
    // Each ran in its own container.
    assert_ne!(ok.sandbox_id, err.sandbox_id);
    assert_ne!(err.sandbox_id, to.sandbox_id);
    rt.flush().await;
    assert!(rt.list_managed().await.unwrap().is_empty());
    finish(rt).await;
}

#[tokio::test]
async fn a_dropped_execution_removes_its_container() {
    let rt = runtime(config("dropped")).await;
    let task = {
        let rt = rt.clone();
        tokio::spawn(async move {
            rt.execute(
                ExecRequest::builder("import time; time.sleep(60)")
                    .timeout(Duration::from_secs(90))
                    .build()
                    .unwrap(),
            )
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = rt.list_managed().await.unwrap();
        if list.iter().any(|c| c.running) {
            break;
        }
        assert!(Instant::now() < deadline, "the container never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rt.list_managed().await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the dropped execution's container was not removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    finish(rt).await;
}

// ---------- resource limits ----------

#[tokio::test]
async fn a_1gib_allocation_under_256mib_is_oom_killed() {
    let rt = runtime(config("oom")).await;
    let r = rt
        .execute(
            ExecRequest::builder(
                "print('allocating', flush=True)\nb = bytearray(1 << 30)\nprint('survived')",
            )
            .memory_bytes(256 * 1024 * 1024)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 137, "stderr: {}", r.stderr);
    assert!(r.oom_killed, "the container state reports the OOM kill");
    assert_eq!(r.status, ExecStatus::OomKilled);
    assert!(!r.timed_out);
    assert_eq!(r.stdout, "allocating\n");
    finish(rt).await;
}

#[tokio::test]
async fn half_a_cpu_holds_a_busy_loop_at_or_under_0_6() {
    let rt = runtime(config("cpu")).await;
    let r = rt
        .execute(
            ExecRequest::builder(
                "import time\n\
                 w0, c0 = time.monotonic(), time.process_time()\n\
                 while time.monotonic() - w0 < 3.0:\n    pass\n\
                 print((time.process_time() - c0) / (time.monotonic() - w0))\n",
            )
            .cpus(0.5)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0, "stderr: {}", r.stderr);
    let ratio: f64 = r.stdout.trim().parse().unwrap();
    assert!(ratio <= 0.6, "cpu/wall {ratio} over 0.6 at cpus=0.5");
    assert!(ratio >= 0.2, "cpu/wall {ratio}: the loop barely ran");
    finish(rt).await;
}

#[tokio::test]
async fn a_fork_bomb_is_held_at_the_pids_limit_and_the_host_stays_responsive() {
    let rt = runtime(config("forkbomb")).await;
    // Count how many processes the bomb can make, then detonate a classic one.
    let count = rt
        .execute(
            ExecRequest::builder(
                "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print(n, e.errno)\n",
            )
            .pids(32)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        )
        .await
        .unwrap();
    let mut parts = count.stdout.split_whitespace();
    let forks: u32 = parts.next().expect("a count").parse().unwrap();
    let errno: i32 = parts.next().expect("an errno").parse().unwrap();
    assert!(forks < 32, "{forks} processes under pids=32");
    assert_eq!(errno, 11, "fork fails with EAGAIN");

    let bomb = {
        let rt = rt.clone();
        tokio::spawn(async move {
            rt.execute(
                ExecRequest::builder(":(){ :|:& };:\nsleep 30")
                    .language(Language::Bash)
                    .pids(64)
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap(),
            )
            .await
        })
    };
    // Meanwhile the host still starts processes promptly.
    let mut worst = Duration::ZERO;
    let probe_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < probe_until {
        let t = Instant::now();
        let status = tokio::process::Command::new("true").status().await.unwrap();
        assert!(status.success());
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = bomb.await.unwrap().unwrap();
    assert!(
        r.timed_out,
        "the bomb ran until the timeout killed it: {} / {}",
        r.exit_code, r.stderr
    );
    assert!(
        worst < Duration::from_secs(1),
        "spawning `true` on the host took {worst:?} during the fork bomb"
    );
    finish(rt).await;
}

#[tokio::test]
async fn output_of_100kb_is_intact_and_over_the_cap_is_truncated_and_flagged() {
    let rt = runtime(config("output")).await;
    let r = py(
        &rt,
        "import sys\nfor i in range(1000):\n    sys.stdout.write('%04d' % i + 'x' * 95 + '\\n')\n",
    )
    .await;
    assert_eq!(r.stdout.len(), 100_000);
    assert!(!r.stdout_truncated);
    for (i, line) in r.stdout.lines().enumerate() {
        assert_eq!(line, format!("{i:04}{}", "x".repeat(95)));
    }

    let r = rt
        .execute(
            ExecRequest::builder("import sys\nprint('y' * 50000)\nprint('small', file=sys.stderr)")
                .output_limit(1000)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.stdout, "y".repeat(1000));
    assert!(r.stdout_truncated);
    assert_eq!(r.stderr, "small\n");
    assert!(!r.stderr_truncated);
    finish(rt).await;
}

#[tokio::test]
async fn stdout_and_stderr_interleaved_writes_stay_in_their_own_streams() {
    let rt = runtime(config("streams")).await;
    let r = py(
        &rt,
        "import sys\nfor i in range(300):\n    print('out', i)\n    print('err', i, file=sys.stderr)\n",
    )
    .await;
    let want_out: String = (0..300).map(|i| format!("out {i}\n")).collect();
    let want_err: String = (0..300).map(|i| format!("err {i}\n")).collect();
    assert_eq!(r.stdout, want_out);
    assert_eq!(r.stderr, want_err);
    finish(rt).await;
}

#[tokio::test]
async fn empty_code_and_unicode() {
    let rt = runtime(config("unicode")).await;
    let r = py(&rt, "").await;
    assert_eq!(
        (r.exit_code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "", "")
    );
    let r = py(&rt, "s = 'héllo wörld — 你好 🚀'\nprint(s, len(s))").await;
    assert_eq!(r.stdout, "héllo wörld — 你好 🚀 18\n");
    let r = rt
        .execute(
            ExecRequest::builder("echo \"$1 ünïcødé 🎉\"")
                .language("bash")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, " ünïcødé 🎉\n");
    finish(rt).await;
}

// ---------- isolation ----------

#[tokio::test]
async fn filesystem_is_isolated_and_read_only_outside_the_tmpfs_mounts() {
    let rt = runtime(config("fs")).await;
    let host_file = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    assert!(std::path::Path::new(host_file).exists());
    let code = format!(
        "import os, errno\n\
         for p in ['/evil', '/usr/evil', '/etc/passwd']:\n\
         \x20   try:\n\
         \x20       open(p, 'a').write('x')\n\
         \x20       print('WROTE', p)\n\
         \x20   except OSError as e:\n\
         \x20       print('denied', p, errno.errorcode[e.errno])\n\
         open('/tmp/ok', 'w').write('t'); open('/workspace/ok', 'w').write('w')\n\
         print('tmp+workspace writable')\n\
         print('host file visible' if os.path.exists({host_file:?}) else 'host file absent')\n\
         print('work visible' if os.path.exists('/work') else 'work absent')\n"
    );
    let r = py(&rt, &code).await;
    assert_eq!(r.exit_code, 0, "stderr: {}", r.stderr);
    assert!(!r.stdout.contains("WROTE"), "{}", r.stdout);
    assert!(r.stdout.contains("denied /evil EROFS"), "{}", r.stdout);
    assert!(r.stdout.contains("denied /usr/evil EROFS"), "{}", r.stdout);
    assert!(r.stdout.contains("denied /etc/passwd"), "{}", r.stdout);
    assert!(r.stdout.contains("tmp+workspace writable"));
    assert!(r.stdout.contains("host file absent"), "{}", r.stdout);
    assert!(r.stdout.contains("work absent"), "{}", r.stdout);
    finish(rt).await;
}

#[tokio::test]
async fn runs_as_uid_1000_with_no_capabilities_and_no_new_privileges() {
    let rt = runtime(config("uid")).await;
    let r = py(
        &rt,
        "import os\nprint(os.getuid(), os.geteuid(), os.getgid())\n\
         st = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n\
         print(st['CapEff'], st['CapPrm'], st['CapBnd'], st['NoNewPrivs'])\n",
    )
    .await;
    assert_eq!(
        r.stdout, "1000 1000 1000\n0000000000000000 0000000000000000 0000000000000000 1\n",
        "stderr: {}",
        r.stderr
    );
    let r = rt
        .execute(
            ExecRequest::builder("id -u; id -g")
                .language(Language::Bash)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, "1000\n1000\n");
    finish(rt).await;
}

#[tokio::test]
async fn no_host_variable_is_visible_only_the_requested_ones() {
    let rt = runtime(config("env")).await;
    let r = rt
        .execute(
            ExecRequest::builder("import os, json\nprint(json.dumps(dict(os.environ)))")
                .env("WFLO_GIVEN", "yes")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let env: std::collections::BTreeMap<String, String> =
        serde_json::from_str(r.stdout.trim()).unwrap();
    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "HOME",
            "LANG",
            "PATH",
            "PYTHONDONTWRITEBYTECODE",
            "PYTHONUNBUFFERED",
            "WFLO_GIVEN"
        ]
    );
    assert_eq!(env["WFLO_GIVEN"], "yes");
    // Nothing of this (host) process's environment went in.
    for (k, v) in std::env::vars() {
        let shared_value = env.values().any(|cv| *cv == v);
        if v.len() > 3 && !shared_value {
            assert!(!r.stdout.contains(&v), "host variable {k} leaked");
        }
    }
    finish(rt).await;
}

#[tokio::test]
async fn no_docker_socket_inside() {
    let rt = runtime(config("socket")).await;
    let r = py(
        &rt,
        "import os\nprint([p for p in ['/var/run/docker.sock', '/run/docker.sock', '/var/run/docker', '/run/containerd'] if os.path.exists(p)])\n\
         print(sorted(os.environ.get(k, '') for k in ['DOCKER_HOST']))",
    )
    .await;
    assert_eq!(r.stdout, "[]\n['']\n", "stderr: {}", r.stderr);
    finish(rt).await;
}

#[tokio::test]
async fn filling_tmp_stops_at_the_tmpfs_size_and_fsize_caps_a_file() {
    let mut limits = Limits::default();
    limits.tmp_bytes = 8 * 1024 * 1024;
    limits.file_size_bytes = 2 * 1024 * 1024;
    let rt = runtime(config("tmpfill").default_limits(limits)).await;
    let r = py(
        &rt,
        "import errno\nchunk = b'x' * (256 * 1024)\ntotal = 0\nn = 0\n\
         try:\n    while True:\n        with open('/tmp/fill%d' % n, 'wb') as f:\n            for _ in range(4):\n                f.write(chunk); f.flush(); total += len(chunk)\n        n += 1\n\
         except OSError as e:\n    print(total, errno.errorcode[e.errno])\n\
         try:\n    with open('/workspace/big', 'wb') as f:\n        f.write(b'y' * (3 * 1024 * 1024))\n    print('big file written')\n\
         except OSError as e:\n    print(errno.errorcode[e.errno])\n",
    )
    .await;
    assert_eq!(r.exit_code, 0, "stderr: {}", r.stderr);
    let mut lines = r.stdout.lines();
    let first: Vec<&str> = lines.next().unwrap().split(' ').collect();
    let total: u64 = first[0].parse().unwrap();
    assert_eq!(first[1], "ENOSPC", "{}", r.stdout);
    assert!(
        (6 * 1024 * 1024..=8 * 1024 * 1024).contains(&total),
        "wrote {total} bytes into an 8 MiB /tmp"
    );
    assert_eq!(
        lines.next(),
        Some("EFBIG"),
        "the fsize ulimit stops a 3 MiB file"
    );
    finish(rt).await;
}

#[tokio::test]
async fn the_code_env_values_and_stdin_are_absent_from_docker_inspect() {
    let rt = runtime(config("inspect")).await;
    let marker = format!("MARKER_{}", uuid::Uuid::now_v7().simple());
    let secret = format!("SECRET_{}", uuid::Uuid::now_v7().simple());
    let stdin = format!("STDIN_{}", uuid::Uuid::now_v7().simple());
    let task = {
        let rt = rt.clone();
        let code = format!("import time\nprint('{marker}'[:3], flush=True)\ntime.sleep(4)\n");
        let req = ExecRequest::builder(code)
            .env("API_KEY", secret.clone())
            .stdin(stdin.clone())
            .build()
            .unwrap();
        tokio::spawn(async move { rt.execute(req).await })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        if let Some(c) = rt
            .list_managed()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.running)
        {
            break c.id;
        }
        assert!(Instant::now() < deadline, "the container never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let inspect = common::docker_inspect(&id);
    assert!(
        inspect.contains("wflo.sandbox-id"),
        "inspected the right container"
    );
    assert!(!inspect.contains(&marker), "code visible in docker inspect");
    assert!(
        !inspect.contains(&secret),
        "env value visible in docker inspect"
    );
    assert!(!inspect.contains(&stdin), "stdin visible in docker inspect");
    let r = task.await.unwrap().unwrap();
    assert_eq!(r.stdout, "MAR\n");
    finish(rt).await;
}

// ---------- network ----------

/// A TCP server on the docker0 gateway that answers each connection with a token and counts
/// connections.
fn gateway_server() -> (
    String,
    u16,
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let ip = common::bridge_gateway();
    let listener = std::net::TcpListener::bind((ip.as_str(), 0))
        .unwrap_or_else(|e| panic!("bind a test server on the bridge gateway {ip}: {e}"));
    let port = listener.local_addr().unwrap().port();
    let token = format!("TOKEN_{}", uuid::Uuid::now_v7().simple());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (t, h) = (token.clone(), hits.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 64];
            conn.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(t.as_bytes());
        }
    });
    (ip, port, token, hits)
}

fn connect_code(ip: &str, port: u16) -> String {
    format!(
        "import socket\n\
         try:\n\
         \x20   s = socket.create_connection(('{ip}', {port}), timeout=3)\n\
         \x20   s.sendall(b'hi')\n\
         \x20   print('reply', s.recv(64).decode())\n\
         except OSError as e:\n\
         \x20   print('failed', type(e).__name__, e.errno)\n\
         print(sorted(n for _, n in socket.if_nameindex()))\n"
    )
}

#[tokio::test]
async fn network_is_off_by_default() {
    let (ip, port, _token, hits) = gateway_server();
    let rt = runtime(config("net-off")).await;
    let r = py(&rt, &connect_code(&ip, port)).await;
    assert_eq!(r.exit_code, 0, "stderr: {}", r.stderr);
    assert!(r.stdout.starts_with("failed "), "{}", r.stdout);
    assert!(r.stdout.contains("['lo']"), "only loopback: {}", r.stdout);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    finish(rt).await;
}

#[tokio::test]
async fn network_on_when_asked_reaches_a_server_on_the_bridge_gateway() {
    let (ip, port, token, hits) = gateway_server();
    let rt = runtime(config("net-on")).await;
    let r = rt
        .execute(
            ExecRequest::builder(connect_code(&ip, port))
                .network(NetworkPolicy::Bridge)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0, "stderr: {}", r.stderr);
    assert!(
        r.stdout.starts_with(&format!("reply {token}\n")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("eth0"), "{}", r.stdout);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    finish(rt).await;
}

#[tokio::test]
async fn interpreter_exit_semantics_hold() {
    let rt = runtime(config("exitsem")).await;
    // atexit handlers run and non-daemon threads are joined before the end is reported.
    let r = py(
        &rt,
        "import atexit, threading, time\n\
         atexit.register(lambda: print('atexit ran'))\n\
         def late():\n    time.sleep(0.3)\n    print('thread done')\n\
         threading.Thread(target=late).start()\n\
         print('main done')\n",
    )
    .await;
    assert_eq!(r.stdout, "main done\nthread done\natexit ran\n");
    assert_eq!(r.exit_code, 0);
    // sys.exit with a message: printed to stderr, exit 1.
    let r = py(&rt, "import sys\nsys.exit('giving up')").await;
    assert_eq!((r.exit_code, r.stderr.as_str()), (1, "giving up\n"));
    // Something that looks like the end trailer (without this run's nonce) is plain output.
    let r = py(&rt, "print('\\x1eWFLO-END:abc:0:0')\nraise SystemExit(4)").await;
    assert_eq!(r.stdout, "\u{1e}WFLO-END:abc:0:0\n");
    assert_eq!(r.exit_code, 4);
    // A program that kills the bootstrap supervising it still yields a result.
    let r = py(
        &rt,
        "import os, signal\nprint('x', flush=True)\nos.kill(os.getppid(), signal.SIGKILL)\nimport time; time.sleep(30)",
    )
    .await;
    assert_eq!(r.stdout, "x\n");
    assert_ne!(r.exit_code, 0);
    assert!(!r.timed_out && !r.oom_killed);
    rt.flush().await;
    assert!(rt.list_managed().await.unwrap().is_empty());
    finish(rt).await;
}
