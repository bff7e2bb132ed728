//! Real storage servers for the remote cache tests: redis-server, nginx
//! with WebDAV, and moto's S3 server, each started by the test on a free
//! loopback port in its own temporary directory and killed when dropped.
//!
//! A missing server makes [`start`] return `None` after printing why; with
//! `HG_TEST_REQUIRE_ALL=1` it panics instead (CI installs them with
//! scripts/setup.d/remote.sh).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// redis-server.
    Redis,
    /// nginx with the dav and dav-ext modules (PROPFIND, MKCOL).
    Webdav,
    /// nginx taking plain PUT/GET (as a ccache or Bazel HTTP cache).
    Http,
    /// moto_server (S3).
    S3,
}

impl Kind {
    pub fn backend(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Webdav => "webdav",
            Kind::Http => "http",
            Kind::S3 => "s3",
        }
    }
}

/// The bucket the S3 server is given.
pub const BUCKET: &str = "hg-cache";

/// A running server.
pub struct Server {
    pub kind: Kind,
    pub port: u16,
    /// `cache.remote.url` for it.
    pub url: String,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

pub fn require_all() -> bool {
    std::env::var("HG_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Prints why a test is skipped, or fails under `HG_TEST_REQUIRE_ALL=1`.
pub fn skip(why: &str) {
    if require_all() {
        panic!("HG_TEST_REQUIRE_ALL=1 but: {why}");
    }
    eprintln!("SKIPPED: {why} (scripts/setup.d/remote.sh installs it)");
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

fn wait_port(port: u16, child: &mut Child, limit: Duration) -> Result<(), String> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("port {port} not open after {limit:?}"))
}

/// Starts a server of `kind`, or `None` (printed) if it is not installed.
pub fn start(kind: Kind) -> Option<Server> {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port taken between picking and binding: try a few.
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        let spawned = match kind {
            Kind::Redis => spawn_redis(dir.path(), port),
            Kind::Webdav | Kind::Http => spawn_nginx(dir.path(), port, kind == Kind::Webdav),
            Kind::S3 => spawn_moto(dir.path(), port),
        };
        let mut child = match spawned {
            Ok(c) => c,
            Err(why) => {
                skip(&why);
                return None;
            }
        };
        match wait_port(port, &mut child, Duration::from_secs(30)) {
            Ok(()) => {
                let url = match kind {
                    Kind::Redis => format!("redis://127.0.0.1:{port}/0"),
                    Kind::Webdav | Kind::Http | Kind::S3 => format!("http://127.0.0.1:{port}"),
                };
                let s = Server {
                    kind,
                    port,
                    url,
                    dir,
                    child: Some(child),
                };
                if kind == Kind::S3 {
                    let (status, _) = s.http("PUT", &format!("/{BUCKET}"), b"");
                    assert_eq!(status, 200, "create bucket");
                }
                return Some(s);
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                last = format!("{kind:?} server did not start: {e}");
            }
        }
    }
    panic!("{last}");
}

fn spawn_redis(dir: &Path, port: u16) -> Result<Child, String> {
    let bin = which("redis-server").ok_or("redis-server is not installed")?;
    Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run redis-server: {e}"))
}

fn spawn_nginx(dir: &Path, port: u16, dav_ext: bool) -> Result<Child, String> {
    let bin = which("nginx").ok_or("nginx is not installed")?;
    let v = Command::new(&bin)
        .arg("-V")
        .output()
        .map_err(|e| format!("cannot run nginx: {e}"))?;
    if !String::from_utf8_lossy(&v.stderr).contains("--with-http_dav_module") {
        return Err("nginx has no http_dav_module".into());
    }
    let ext = Path::new("/usr/lib/nginx/modules/ngx_http_dav_ext_module.so");
    if dav_ext && !ext.exists() {
        return Err("nginx's dav-ext module (libnginx-mod-http-dav-ext) is not installed".into());
    }
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let d = dir.display();
    let conf = format!(
        "{load}
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {data};
        client_max_body_size 0;
        location / {{
            dav_methods PUT DELETE MKCOL COPY MOVE;
            {ext_methods}
            create_full_put_path {full};
            dav_access user:rw group:r all:r;
        }}
    }}
}}
",
        load = if dav_ext {
            format!("load_module {};", ext.display())
        } else {
            String::new()
        },
        ext_methods = if dav_ext {
            "dav_ext_methods PROPFIND OPTIONS;"
        } else {
            ""
        },
        // A plain HTTP cache takes a PUT anywhere; WebDAV wants MKCOL.
        full = if dav_ext { "off" } else { "on" },
        data = data.display(),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("write nginx.conf");
    Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run nginx: {e}"))
}

fn spawn_moto(dir: &Path, port: u16) -> Result<Child, String> {
    let mut cmd = if let Some(bin) = which("moto_server") {
        Command::new(bin)
    } else {
        let ok = Command::new("python3")
            .args(["-c", "import moto.server"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Err("moto's S3 server (pip install 'moto[server]') is not installed".into());
        }
        let mut c = Command::new("python3");
        c.args(["-m", "moto.server"]);
        c
    };
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run moto_server: {e}"))
}

impl Server {
    /// Stops the server now (a store that goes away mid-build).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One plain HTTP/1.1 request; returns the status and the body.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        // moto checks no signature, but serves only requests that name a
        // user (anonymous reads of private objects are refused).
        let auth = if self.kind == Kind::S3 {
            "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n"
        } else {
            ""
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes()).expect("send");
        s.write_all(body).expect("send");
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let text = String::from_utf8_lossy(&resp);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| resp[i + 4..].to_vec())
            .unwrap_or_default();
        (status, body)
    }

    /// One Redis command; returns the raw reply.
    pub fn redis(&self, args: &[&[u8]]) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        // QUIT makes the server close the connection after the reply.
        req.extend_from_slice(b"*1\r\n$4\r\nQUIT\r\n");
        s.write_all(&req).expect("send");
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        if resp.ends_with(b"+OK\r\n") {
            resp.truncate(resp.len() - 5);
        }
        resp
    }

    /// Overwrites the stored object at `path` (relative to the server's
    /// root, i.e. `<prefix>/<layout path>`) with `data`, bypassing the
    /// cache code.
    pub fn overwrite(&self, path: &str, data: &[u8]) {
        match self.kind {
            Kind::Redis => {
                let r = self.redis(&[b"SET", path.as_bytes(), data]);
                assert!(r.starts_with(b"+OK"), "{}", String::from_utf8_lossy(&r));
            }
            Kind::Webdav | Kind::Http => {
                let file = self.dir.path().join("data").join(path);
                assert!(file.exists(), "{} exists", file.display());
                std::fs::write(&file, data).expect("overwrite");
            }
            Kind::S3 => {
                let (status, _) = self.http("PUT", &format!("/{BUCKET}/{path}"), data);
                assert_eq!(status, 200, "overwrite object");
            }
        }
        assert_eq!(self.read(path).as_deref(), Some(data), "overwritten");
    }

    /// The stored object at `path`, if there is one.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        match self.kind {
            Kind::Redis => {
                let r = self.redis(&[b"GET", path.as_bytes()]);
                if r.starts_with(b"$-1") {
                    return None;
                }
                let nl = r.windows(2).position(|w| w == b"\r\n")?;
                let len: usize = std::str::from_utf8(&r[1..nl]).ok()?.parse().ok()?;
                Some(r[nl + 2..nl + 2 + len].to_vec())
            }
            Kind::Webdav | Kind::Http => {
                std::fs::read(self.dir.path().join("data").join(path)).ok()
            }
            Kind::S3 => {
                let (status, body) = self.http("GET", &format!("/{BUCKET}/{path}"), b"");
                (status == 200).then_some(body)
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
