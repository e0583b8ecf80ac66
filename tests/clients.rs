//! `om serve` as a user runs it (the binary, a child process, free loopback
//! ports) driven by clients nobody here wrote: ADBC's Flight SQL driver with
//! pyarrow (tests/clients/flight_sql.py) and Python's urllib for the HTTP API
//! (tests/clients/http_api.py). Then SIGTERM: the server exits 0.
//!
//! The Python clients are pinned in .ci/requirements-clients.txt; `.ci/run`
//! installs them and sets OMEGA_CLIENTS_PYTHON and OMEGA_REQUIRE_CLIENTS=1.
//! Without them the test says so and passes (a developer machine).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use omegastore::store::keys::Keys;
use omegastore::{Omega, PutOptions};

use common::{exec, local, om_bin, sample_batch};

fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("OMEGA_CLIENTS_PYTHON").map(PathBuf::from),
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/omegastore-venv/bin/python")),
    ];
    for p in candidates.into_iter().flatten() {
        let ok = Command::new(&p)
            .args(["-c", "import adbc_driver_flightsql, pyarrow"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(p);
        }
    }
    if std::env::var_os("OMEGA_REQUIRE_CLIENTS").is_some() {
        panic!(
            "OMEGA_REQUIRE_CLIENTS is set but no Python with adbc-driver-flightsql and pyarrow was found"
        );
    }
    None
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `om serve` on free ports; returns it with its Flight and HTTP URLs
/// read from the startup line.
fn serve(root: &str) -> (Server, String, String) {
    let (child, line) = spawn_serve(
        &["--root", root, "serve", "--flight", "127.0.0.1:0"],
        &["--http", "127.0.0.1:0", "--max-body", "1MiB"],
        "warn",
        Stdio::inherit(),
    );
    let (flight, http) = (address(&line, "grpc://"), address(&line, "http://"));
    assert!(line.contains("API key required"), "{line}");
    (Server(child), flight, http)
}

/// `om <args> <more>` with `OMEGA_LOG=log` and stderr to `stderr`; the
/// process and its startup line.
fn spawn_serve(args: &[&str], more: &[&str], log: &str, stderr: Stdio) -> (Child, String) {
    let mut child = Command::new(om_bin())
        .args(args)
        .args(more)
        .env("OMEGA_LOG", log)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("om serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// The URL with `scheme` in `om serve`'s startup line.
fn address(line: &str, scheme: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with(scheme))
        .map(|w| w.trim_end_matches([',', ';']).to_string())
        .unwrap_or_else(|| panic!("no {scheme} address in the startup line: {line}"))
}

fn run_client(python: &Path, script: &str, env: &[(&str, &str)]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = Command::new(python)
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn adbc_pyarrow_and_urllib_clients_work_against_om_serve() {
    let Some(python) = python() else {
        eprintln!(
            "skipped: no Python with the pinned clients (run .ci/run, or set OMEGA_CLIENTS_PYTHON)"
        );
        return;
    };
    let root = local();
    let om = Omega::open(&root.url).await.unwrap();
    for name in ["t", "u", "v"] {
        om.datasets()
            .put(sample_batch(0, 10), name, PutOptions::default())
            .await
            .unwrap();
    }
    om.bucket("hr")
        .unwrap()
        .datasets()
        .put(sample_batch(0, 3), "p", PutOptions::default())
        .await
        .unwrap();
    exec(&om, "CREATE POLICY low ON t TO analyst USING (id < 4)").await;
    exec(&om, "GRANT read ON BUCKET default TO analyst").await;
    exec(&om, "GRANT write ON BUCKET default TO writer").await;
    exec(
        &om,
        "CREATE MODEL m OPTIONS (type = 'linear_regression', label = 'score') AS SELECT id, score FROM u",
    )
    .await;
    let keys = Keys::new(om.root().clone());
    let writer = keys
        .create("default", "writer", None, None)
        .await
        .unwrap()
        .0;
    let analyst = keys
        .create("default", "analyst", None, None)
        .await
        .unwrap()
        .0;
    let (revoked, record) = keys.create("default", "writer", None, None).await.unwrap();
    keys.revoke(&record.id).await.unwrap();

    let (mut server, flight, http) = serve(&root.url);
    let env = [
        ("OM_FLIGHT", flight.as_str()),
        ("OM_HTTP", http.as_str()),
        ("OM_KEY_WRITER", writer.as_str()),
        ("OM_KEY_ANALYST", analyst.as_str()),
        ("OM_KEY_REVOKED", revoked.as_str()),
    ];
    run_client(&python, "flight_sql.py", &env);
    run_client(&python, "http_api.py", &env);
    // ingest create + append made two versions of one dataset
    let big = om.datasets().metadata("big").await.unwrap();
    assert_eq!(big.version, 2);

    // SIGTERM: stop accepting, finish, exit 0
    let pid = server.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = server.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "om serve exits 0 after SIGTERM");
}

/// Request logs written to a file or a pipe are plain text: no terminal
/// colour codes around the fields a log reader greps for.
#[test]
fn request_logs_to_a_pipe_carry_no_colour_codes() {
    use std::io::{Read, Write};
    let root = local();
    let (child, line) = spawn_serve(
        &["--root", &root.url, "serve", "--flight", "off"],
        &["--http", "127.0.0.1:0"],
        "info",
        Stdio::piped(),
    );
    let url = address(&line, "http://");
    let addr = url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // the request is logged as its response ends: let the line be written
    // before stopping (a lost line would read as a missing request)
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SIGTERM: a graceful stop
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("/healthz"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log: {log:?}"
    );
}

/// `om serve` restarts itself once with glibc's per-thread caches off (most
/// of a loaded server's memory growth, BENCHMARKS.md) and 4 malloc arenas
/// per core (half of glibc's default; less memory held), keeping its pid and
/// its output; a user's own malloc settings are left alone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn om_serve_runs_without_mallocs_thread_caches_unless_the_user_tuned_malloc() {
    let root = local();
    let environ = |user: &[(&str, &str)]| {
        let mut child = Command::new(om_bin())
            .args(["--root", &root.url, "serve", "--flight", "off"])
            .args(["--http", "127.0.0.1:0"])
            .env_remove("GLIBC_TUNABLES")
            .envs(user.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // the startup line comes from the process the pid names now
        assert!(line.contains("http://127.0.0.1:"), "{line}");
        let env = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        String::from_utf8_lossy(&env).replace('\0', "\n")
    };
    let env = environ(&[]);
    assert!(env.contains("GLIBC_TUNABLES=glibc.malloc"), "{env}");
    assert!(env.contains("glibc.malloc.tcache_count=0"), "{env}");
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        env.contains(&format!("glibc.malloc.arena_max={}", 4 * cores)),
        "{env}"
    );
    assert!(env.contains("OMEGA_MALLOC_RESTARTED=1"), "{env}");
    let env = environ(&[("MALLOC_ARENA_MAX", "4")]);
    assert!(!env.contains("GLIBC_TUNABLES"), "{env}");
    assert!(!env.contains("OMEGA_MALLOC_RESTARTED"), "{env}");
}
