//! Tests of the remote tier's layouts, URLs and operator setup.

use hybridgrid_core::config::RemoteCacheConfig;

use crate::key::CacheKey;

use super::backend::{root, split_url};
use super::*;

#[test]
fn layouts_match_ccache_and_bazel() {
    let k = CacheKey::from_bytes([0xab; 32]);
    let hex = "ab".repeat(32);
    assert_eq!(Layout::Subdirs.path(&k), format!("ab/{}", &hex[2..]));
    assert_eq!(Layout::Flat.path(&k), hex);
    assert_eq!(Layout::Bazel.path(&k), format!("ac/{hex}"));
    assert_eq!(Layout::parse("bazel"), Some(Layout::Bazel));
    assert_eq!(Layout::parse("deep"), None);
}

#[test]
fn urls_are_split_for_opendal() {
    let p = split_url("redis://user:pw@127.0.0.1:6379/3");
    assert_eq!(p.endpoint, "redis://127.0.0.1:6379/3");
    assert_eq!(p.path, "3");
    assert_eq!(p.user.as_deref(), Some("user"));
    assert_eq!(p.password.as_deref(), Some("pw"));
    let p = split_url("http://h:8080/cache/");
    assert_eq!(p.endpoint, "http://h:8080/cache");
    assert_eq!((p.user, p.password), (None, None));
    assert_eq!(root(""), "/");
    assert_eq!(root("/team/x/"), "/team/x/");
}

#[tokio::test]
async fn backends_left_out_of_the_build_are_named() {
    let mut cfg = RemoteCacheConfig::default();
    cfg.backend = "tape".into();
    cfg.url = "http://127.0.0.1:1".into();
    let e = RemoteStore::new(&cfg).unwrap_err().to_string();
    assert!(e.contains("tape") && e.contains("not supported"), "{e}");
}
