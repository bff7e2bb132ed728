//! The remote tier against real servers: redis-server, nginx (WebDAV and
//! plain HTTP) and moto's S3 server, each started here on a free loopback
//! port. Run with the backends enabled:
//!
//! ```text
//! cargo test -p hybridgrid-cache --features remote-redis,remote-webdav,remote-s3 --test remote
//! ```

mod servers;

#[cfg(not(all(
    feature = "remote-redis",
    feature = "remote-webdav",
    feature = "remote-s3"
)))]
#[test]
fn remote_backends_are_built() {
    servers::skip(
        "hybridgrid-cache was built without remote-redis, remote-webdav and remote-s3; \
         run with --features remote-redis,remote-webdav,remote-s3",
    );
}

#[cfg(all(
    feature = "remote-redis",
    feature = "remote-webdav",
    feature = "remote-s3"
))]
mod remote {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use hybridgrid_cache::store::{
        CacheStore, DiskStore, Lookup, MemoryStore, RemoteStore, TieredStore,
    };
    use hybridgrid_cache::{CacheEntry, CacheKey};
    use hybridgrid_core::config::RemoteCacheConfig;
    use hybridgrid_core::payload::Payload;

    use super::servers::{self, BUCKET, Kind, Server};

    fn config(s: &Server) -> RemoteCacheConfig {
        let mut c = RemoteCacheConfig::default();
        c.backend = s.kind.backend().into();
        c.url = s.url.clone();
        c.timeout = Duration::from_secs(5);
        if s.kind == Kind::S3 {
            let secret = s.dir.path().join("secret");
            std::fs::write(&secret, "testing-secret\n").expect("secret file");
            c.bucket = BUCKET.into();
            c.access_key_id = "testing".into();
            c.secret_access_key_file = secret.display().to_string();
        }
        c
    }

    fn entry(n: u8) -> CacheEntry {
        CacheEntry {
            stderr: Bytes::from(format!("x.c:1: warning: {n}\n")),
            object: Some(Payload::raw(vec![n; 4096])),
            ..CacheEntry::default()
        }
    }

    fn key(n: u8) -> CacheKey {
        CacheKey::from_bytes([n; 32])
    }

    /// The server-side path of `key` under the default prefix.
    fn stored_path(store: &RemoteStore, k: &CacheKey) -> String {
        format!("hybridgrid/{}", store.path_of(k))
    }

    async fn hit_miss_fill_through(kind: Kind) {
        let Some(server) = servers::start(kind) else {
            return;
        };
        let cfg = config(&server);
        let writer = RemoteStore::new(&cfg).expect("remote store");
        let local_a = tempfile::tempdir().expect("tempdir");
        let a = TieredStore::new(
            Arc::new(DiskStore::new(local_a.path(), 1 << 30)),
            Arc::new(writer.clone()),
        );
        assert_eq!(a.get(&key(1)).await, Lookup::Miss, "empty server");
        assert_eq!(writer.remote_stats().misses, 1);

        assert!(a.put(&key(1), &entry(1)).await.stored);
        assert_eq!(writer.flush(Duration::from_secs(20)).await, 0);
        assert_eq!(writer.remote_stats().writes, 1);
        let on_server = server
            .read(&stored_path(&writer, &key(1)))
            .expect("entry on the server");
        assert_eq!(CacheEntry::decode(&on_server).expect("intact"), entry(1));

        // Another machine: an empty local tier, a new connection.
        let reader = RemoteStore::new(&cfg).expect("remote store");
        let local_b: Arc<dyn CacheStore> = Arc::new(MemoryStore::new(1 << 30));
        let b = TieredStore::new(local_b.clone(), Arc::new(reader.clone()));
        assert_eq!(b.get(&key(1)).await, Lookup::Hit(entry(1)));
        assert_eq!(b.fills(), 1, "the remote hit filled the local tier");
        assert_eq!(local_b.get(&key(1)).await, Lookup::Hit(entry(1)));
        assert_eq!(b.get(&key(2)).await, Lookup::Miss);
        let s = reader.remote_stats();
        assert_eq!((s.hits, s.misses, s.errors), (1, 1, 0), "{s:?}");
        assert!(s.available);
    }

    async fn read_only(kind: Kind) {
        let Some(server) = servers::start(kind) else {
            return;
        };
        let cfg = config(&server);
        let rw = RemoteStore::new(&cfg).expect("remote store");
        rw.put(&key(1), &entry(1)).await;
        assert_eq!(rw.flush(Duration::from_secs(20)).await, 0);

        let mut ro_cfg = cfg.clone();
        ro_cfg.read_only = true;
        let ro = RemoteStore::new(&ro_cfg).expect("remote store");
        assert!(ro.read_only());
        assert!(!ro.put(&key(2), &entry(2)).await.stored);
        assert_eq!(ro.flush(Duration::from_secs(5)).await, 0);
        assert!(
            server.read(&stored_path(&ro, &key(2))).is_none(),
            "nothing written"
        );
        assert!(
            !ro.remove(&key(1)).await,
            "a read-only tier removes nothing"
        );
        assert_eq!(ro.get(&key(1)).await, Lookup::Hit(entry(1)), "still reads");
        assert_eq!(ro.remote_stats().writes, 0);
    }

    async fn corrupt_entry(kind: Kind) {
        let Some(server) = servers::start(kind) else {
            return;
        };
        let store = RemoteStore::new(&config(&server)).expect("remote store");
        for n in [1u8, 2] {
            store.put(&key(n), &entry(n)).await;
        }
        assert_eq!(store.flush(Duration::from_secs(20)).await, 0);
        let good = server
            .read(&stored_path(&store, &key(1)))
            .expect("entry on the server");
        // One object truncated, one with a flipped byte.
        server.overwrite(&stored_path(&store, &key(1)), &good[..good.len() / 2]);
        let mut flipped = server
            .read(&stored_path(&store, &key(2)))
            .expect("entry on the server");
        flipped[100] ^= 0x55;
        server.overwrite(&stored_path(&store, &key(2)), &flipped);

        assert_eq!(store.get(&key(1)).await, Lookup::Failed);
        assert_eq!(store.get(&key(2)).await, Lookup::Failed);
        let s = store.remote_stats();
        assert_eq!((s.hits, s.corrupt, s.errors), (0, 2, 2), "{s:?}");
        assert!(s.available, "a corrupt entry is not an outage");
        // The bad objects were removed, so they are plain misses now and a
        // fresh compile can store a good one.
        assert_eq!(store.get(&key(1)).await, Lookup::Miss);
        assert!(server.read(&stored_path(&store, &key(2))).is_none());
    }

    async fn server_killed(kind: Kind) {
        let Some(mut server) = servers::start(kind) else {
            return;
        };
        let mut cfg = config(&server);
        cfg.timeout = Duration::from_secs(1);
        cfg.write_timeout = Duration::from_secs(1);
        cfg.retry_after = Duration::from_secs(600);
        let store = RemoteStore::new(&cfg).expect("remote store");
        store.put(&key(1), &entry(1)).await;
        assert_eq!(store.flush(Duration::from_secs(20)).await, 0);
        assert!(store.get(&key(1)).await.is_hit());

        server.kill();
        let local: Arc<dyn CacheStore> = Arc::new(MemoryStore::new(1 << 30));
        let tiers = TieredStore::new(local.clone(), Arc::new(store.clone()));
        let started = Instant::now();
        // The first lookup finds the server gone; the rest skip it.
        assert!(!tiers.get(&key(1)).await.is_hit());
        for n in 2..12 {
            assert!(!tiers.get(&key(n)).await.is_hit());
            assert!(tiers.put(&key(n), &entry(n)).await.stored, "local tier");
        }
        // Bounded by one timeout, not one per call.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(store.flush(Duration::from_secs(10)).await, 0);
        let s = store.remote_stats();
        assert!(!s.available);
        assert_eq!(
            s.errors, 1,
            "one failed call, then the tier is skipped: {s:?}"
        );
        assert_eq!(s.skipped, 10, "{s:?}");
        assert_eq!(s.dropped_writes, 10, "{s:?}");
        // The local tier carried on.
        assert!(local.get(&key(5)).await.is_hit());
    }

    macro_rules! backend_tests {
        ($($name:ident => $kind:expr),* $(,)?) => {$(
            mod $name {
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn hit_miss_and_fill_through() {
                    hit_miss_fill_through($kind).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn read_only_reads_but_never_writes() {
                    read_only($kind).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn corrupt_entries_are_misses_and_counted() {
                    corrupt_entry($kind).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_killed_server_degrades_to_the_local_tier() {
                    server_killed($kind).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_hanging_server_times_out_every_call() {
                    hanging_server($kind).await;
                }
            }
        )*};
    }

    backend_tests! {
        redis => Kind::Redis,
        webdav => Kind::Webdav,
        http => Kind::Http,
        s3 => Kind::S3,
    }

    /// A listener that accepts connections and never answers, until the
    /// returned guard is dropped.
    struct Hanging {
        port: u16,
        stop: Arc<std::sync::atomic::AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Hanging {
        fn start() -> Hanging {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("addr").port();
            listener.set_nonblocking(true).expect("nonblocking");
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = stop.clone();
            let thread = std::thread::spawn(move || {
                let mut conns = Vec::new();
                let t = Instant::now();
                while !flag.load(std::sync::atomic::Ordering::Relaxed)
                    && t.elapsed() < Duration::from_secs(60)
                {
                    if let Ok((c, _)) = listener.accept() {
                        conns.push(c);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            Hanging {
                port,
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Hanging {
        fn drop(&mut self) {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// A server that accepts connections and never answers: every kind of
    /// call (lookup, delete, write) gives up after its timeout, writes
    /// never block the caller, and the write queue stays bounded.
    async fn hanging_server(kind: Kind) {
        let hang = Hanging::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = hang.port;
        let mut cfg = RemoteCacheConfig::default();
        cfg.backend = kind.backend().into();
        cfg.url = match kind {
            Kind::Redis => format!("redis://127.0.0.1:{port}/0"),
            _ => format!("http://127.0.0.1:{port}"),
        };
        if kind == Kind::S3 {
            cfg.bucket = BUCKET.into();
            cfg.access_key_id = "testing".into();
            let secret = dir.path().join("secret");
            std::fs::write(&secret, "testing-secret\n").expect("secret file");
            cfg.secret_access_key_file = secret.display().to_string();
        }
        cfg.timeout = Duration::from_millis(300);
        cfg.write_timeout = Duration::from_millis(300);
        cfg.max_pending_writes = 2;
        cfg.retry_after = Duration::from_secs(600);
        let bound = Duration::from_millis(1500);

        // A lookup.
        let store = RemoteStore::new(&cfg).expect("remote store");
        let started = Instant::now();
        assert_eq!(store.get(&key(1)).await, Lookup::Failed);
        assert!(started.elapsed() < bound, "get: {:?}", started.elapsed());
        let s = store.remote_stats();
        assert_eq!((s.errors, s.available), (1, false), "{s:?}");

        // A delete.
        let store = RemoteStore::new(&cfg).expect("remote store");
        let started = Instant::now();
        assert!(!store.remove(&key(1)).await);
        assert!(started.elapsed() < bound, "remove: {:?}", started.elapsed());

        // Writes: the queue takes two, the rest are dropped at once.
        let store = RemoteStore::new(&cfg).expect("remote store");
        let started = Instant::now();
        for n in 0..20 {
            store.put(&key(n), &entry(n)).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "put: {:?}",
            started.elapsed()
        );
        assert_eq!(store.flush(Duration::from_secs(10)).await, 0);
        let s = store.remote_stats();
        assert_eq!(s.writes, 0);
        assert!(s.write_errors >= 1, "{s:?}");
        assert_eq!(s.write_errors + s.dropped_writes, 20, "{s:?}");
        assert!(!s.available);
        // Lookups are skipped while it is down: no timeout each.
        let started = Instant::now();
        for n in 0..20 {
            assert_eq!(store.get(&key(n)).await, Lookup::Miss);
        }
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(store.remote_stats().skipped, 20);
    }

    /// Outages are shared through the down marker: a second process (here
    /// a second store) stays quiet and skips the server at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_down_marker_is_shared() {
        let port = servers::free_port(); // nothing listens there
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("remote-down");
        let mut cfg = RemoteCacheConfig::default();
        cfg.backend = "redis".into();
        cfg.url = format!("redis://127.0.0.1:{port}");
        cfg.timeout = Duration::from_secs(2);
        let first = RemoteStore::new(&cfg)
            .expect("remote store")
            .with_down_marker(&marker);
        assert_eq!(first.get(&key(1)).await, Lookup::Failed);
        assert!(marker.exists());
        let second = RemoteStore::new(&cfg)
            .expect("remote store")
            .with_down_marker(&marker);
        assert_eq!(second.get(&key(1)).await, Lookup::Miss);
        let s = second.remote_stats();
        assert_eq!((s.errors, s.skipped), (0, 1), "{s:?}");
    }
}
