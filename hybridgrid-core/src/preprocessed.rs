//! Facts read from preprocessed source: the files a translation unit
//! read, from the line markers (`# 1 "path" 1`) that gcc and clang print.
//!
//! ```
//! use hybridgrid_core::preprocessed::{included_files, line_marker_files};
//!
//! let pp = b"# 0 \"a.c\"\n# 1 \"<built-in>\"\n# 1 \"a.h\" 1\nint x;\n# 2 \"a.c\" 2\n";
//! assert_eq!(line_marker_files(pp), vec!["a.c".to_string(), "a.h".to_string()]);
//! assert_eq!(included_files(pp), vec!["a.h".to_string()]);
//! ```

use std::collections::BTreeSet;

/// Every file named by a line marker, in first-seen order, the main source
/// first, without pseudo-files like `<built-in>`.
pub fn line_marker_files(preprocessed: &[u8]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in preprocessed.split(|&b| b == b'\n') {
        let Some(path) = parse_line_marker(line) else {
            continue;
        };
        if path.starts_with('<') && path.ends_with('>') {
            continue;
        }
        if seen.insert(path.clone()) {
            out.push(path);
        }
    }
    out
}

/// The files a preprocessed translation unit read, from its line markers
/// (`# 1 "path" 1` as gcc and clang print them), in first-seen order,
/// without the main source file and pseudo-files like `<built-in>`.
pub fn included_files(preprocessed: &[u8]) -> Vec<String> {
    let mut main: Option<String> = None;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in preprocessed.split(|&b| b == b'\n') {
        let Some(path) = parse_line_marker(line) else {
            continue;
        };
        // `<built-in>`, and the working directory gcc notes with -g
        // (`# 1 "/the/cwd//"`): not files.
        if (path.starts_with('<') && path.ends_with('>')) || path.ends_with('/') {
            continue;
        }
        match &main {
            None => {
                main = Some(path);
                continue;
            }
            Some(m) if *m == path => continue,
            Some(_) => {}
        }
        if seen.insert(path.clone()) {
            out.push(path);
        }
    }
    out
}

/// The path of a `# N "path" flags` or `#line N "path"` line.
pub fn parse_line_marker(line: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(b"#")?;
    let rest = trim_start(rest);
    let rest = match rest.strip_prefix(b"line") {
        Some(r) => trim_start(r),
        None => rest,
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let rest = trim_start(&rest[digits..]);
    let mut it = rest.strip_prefix(b"\"")?.iter().copied();
    let mut out = Vec::new();
    loop {
        match it.next()? {
            b'"' => break,
            b'\\' => match it.next()? {
                d @ b'0'..=b'7' => {
                    let mut v = u32::from(d - b'0');
                    let mut tail = it.clone();
                    for _ in 0..2 {
                        match tail.next() {
                            Some(d @ b'0'..=b'7') => {
                                v = v * 8 + u32::from(d - b'0');
                                it.next();
                            }
                            _ => break,
                        }
                        tail = it.clone();
                    }
                    out.push(u8::try_from(v).ok()?);
                }
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
    String::from_utf8(out).ok()
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| **c == b' ' || **c == b'\t').count();
    &b[n..]
}
