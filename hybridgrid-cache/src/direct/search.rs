//! Include search lists (as `cc -E -v` prints them) and the places where a new
//! header could shadow a recorded one.

use std::collections::BTreeSet;

/// The name an include was looked up by, if `path` lies under `dir`.
fn name_under<'p>(path: &'p str, dir: &str) -> Option<&'p str> {
    let dir = dir.trim_end_matches('/');
    let rest = if dir.is_empty() {
        path.strip_prefix('/')?
    } else {
        path.strip_prefix(dir)?.strip_prefix('/')?
    };
    let rest = rest.trim_start_matches('/');
    (!rest.is_empty()).then_some(rest)
}

pub(super) fn parent_dir(p: &str) -> String {
    match p.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => p[..i].to_string(),
        None => ".".to_string(),
    }
}

pub(super) fn join(dir: &str, name: &str) -> String {
    if dir == "." {
        name.to_string()
    } else {
        format!("{}/{}", dir.trim_end_matches('/'), name)
    }
}

/// The paths where a new file would shadow one of `includes` (see the
/// module docs); the caller keeps those that do not exist.
pub fn shadow_candidates(
    source: &str,
    includes: &[String],
    search_dirs: &[String],
) -> BTreeSet<String> {
    let includer_dirs: BTreeSet<String> = std::iter::once(source)
        .chain(includes.iter().map(String::as_str))
        .map(parent_dir)
        .collect();
    let mut out = BTreeSet::new();
    for p in includes {
        for (i, d) in search_dirs.iter().enumerate() {
            let Some(name) = name_under(p, d) else {
                continue;
            };
            let earlier = search_dirs[..i].iter().chain(includer_dirs.iter());
            for e in earlier {
                let c = join(e, name);
                if c != *p {
                    out.insert(c);
                }
            }
        }
    }
    out
}

/// The include search list as a compiler's `-v` prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchList {
    /// The directories searched, in order (the quote list, then the
    /// angle-bracket list).
    pub dirs: Vec<String>,
    /// Directories named by options or built in that did not exist (gcc
    /// and clang say `ignoring nonexistent directory "..."`).
    pub missing: Vec<String>,
}

/// Parses the standard error of `cc -E -v ...` (gcc and clang print the
/// same text). `None` if it holds no complete search list.
pub fn parse_search_list(stderr: &[u8]) -> Option<SearchList> {
    let text = String::from_utf8_lossy(stderr);
    let mut out = SearchList::default();
    let mut in_list = false;
    let mut complete = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("ignoring nonexistent directory ") {
            let d = rest.trim().trim_matches('"');
            if !d.is_empty() {
                out.missing.push(d.to_string());
            }
            continue;
        }
        if line.starts_with("#include \"...\" search starts here:")
            || line.starts_with("#include <...> search starts here:")
        {
            in_list = true;
            continue;
        }
        if line.starts_with("End of search list.") {
            complete = in_list;
            in_list = false;
            continue;
        }
        if in_list {
            // A leading space; clang marks macOS frameworks.
            let d = line.trim().trim_end_matches(" (framework directory)");
            if !d.is_empty() {
                out.dirs.push(d.to_string());
            }
        }
    }
    complete.then_some(out)
}
