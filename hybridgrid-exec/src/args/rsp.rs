//! `@file` response files, split with gcc's rules (libiberty `buildargv`).

use std::io;
use std::path::{Path, PathBuf};

/// How deep response files may include each other before we give up.
const MAX_DEPTH: usize = 16;

/// Why a response file could not be expanded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseFileError {
    /// The file could not be read.
    #[error("cannot read response file {path}: {source}", path = path.display())]
    Read {
        /// The file named after `@`.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The file is not UTF-8.
    #[error("response file {path} is not valid UTF-8", path = path.display())]
    NotUtf8 {
        /// The file named after `@`.
        path: PathBuf,
    },
    /// Response files include each other too deeply (or in a cycle).
    #[error("response files nested more than {MAX_DEPTH} deep at {path}", path = path.display())]
    TooDeep {
        /// The file at which the limit was hit.
        path: PathBuf,
    },
}

/// Splits the text of a response file into arguments the way gcc does:
/// words are separated by whitespace; single and double quotes group and
/// are removed; a backslash takes the next character literally (also
/// inside quotes). `""` is an empty argument.
pub fn split_response_file(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| is_space(*c)) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut arg = String::new();
        let (mut squote, mut dquote, mut escaped) = (false, false, false);
        while let Some(&c) = chars.peek() {
            if is_space(c) && !squote && !dquote && !escaped {
                break;
            }
            chars.next();
            if escaped {
                escaped = false;
                arg.push(c);
            } else if c == '\\' {
                escaped = true;
            } else if squote {
                if c == '\'' {
                    squote = false;
                } else {
                    arg.push(c);
                }
            } else if dquote {
                if c == '"' {
                    dquote = false;
                } else {
                    arg.push(c);
                }
            } else if c == '\'' {
                squote = true;
            } else if c == '"' {
                dquote = true;
            } else {
                arg.push(c);
            }
        }
        args.push(arg);
    }
    args
}

/// libiberty's `ISSPACE`: space, tab, newline, vertical tab, form feed, CR.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// Replaces every `@file` argument by the arguments in `file`, recursively.
/// Relative names are resolved against `cwd` (gcc resolves them against the
/// working directory, also inside response files). A lone `@` is kept.
pub fn expand_response_files(
    args: Vec<String>,
    cwd: &Path,
) -> Result<Vec<String>, ResponseFileError> {
    expand(args, cwd, 0)
}

fn expand(args: Vec<String>, cwd: &Path, depth: usize) -> Result<Vec<String>, ResponseFileError> {
    if !args.iter().any(|a| a.len() > 1 && a.starts_with('@')) {
        return Ok(args);
    }
    let mut out = Vec::with_capacity(args.len());
    for arg in args {
        let Some(name) = arg.strip_prefix('@').filter(|n| !n.is_empty()) else {
            out.push(arg);
            continue;
        };
        let path = cwd.join(name);
        if depth >= MAX_DEPTH {
            return Err(ResponseFileError::TooDeep { path });
        }
        let bytes = std::fs::read(&path).map_err(|source| ResponseFileError::Read {
            path: path.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ResponseFileError::NotUtf8 { path: path.clone() })?;
        out.extend(expand(split_response_file(&text), cwd, depth + 1)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_gcc() {
        assert_eq!(
            split_response_file("-c  foo.c\n-o\t'out file.o' \"-DX=\\\"a b\\\"\" a\\ b ''"),
            vec!["-c", "foo.c", "-o", "out file.o", "-DX=\"a b\"", "a b", ""]
        );
        assert_eq!(split_response_file("'it''s'"), vec!["its"]);
        assert_eq!(split_response_file("'a\\'b'"), vec!["a'b"]);
        assert_eq!(split_response_file("  \n "), Vec::<String>::new());
        assert_eq!(split_response_file("x\\"), vec!["x"]);
    }

    #[test]
    fn expands_nested_files_and_reports_missing_ones() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("outer.rsp"), "-c @inner.rsp -o x.o")?;
        std::fs::write(dir.path().join("inner.rsp"), "'a b.c' -DX")?;
        let args = vec!["-O2".to_string(), "@outer.rsp".to_string(), "@".to_string()];
        let got = expand_response_files(args, dir.path())?;
        assert_eq!(got, vec!["-O2", "-c", "a b.c", "-DX", "-o", "x.o", "@"]);

        let missing = expand_response_files(vec!["@nope.rsp".into()], dir.path());
        assert!(matches!(missing, Err(ResponseFileError::Read { .. })));

        std::fs::write(dir.path().join("loop.rsp"), "@loop.rsp")?;
        let looped = expand_response_files(vec!["@loop.rsp".into()], dir.path());
        assert!(matches!(looped, Err(ResponseFileError::TooDeep { .. })));
        Ok(())
    }
}
