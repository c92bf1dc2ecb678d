//! Reading and writing the target's `.env` file, keeping its order and comments.
//!
//! The sandbox writes the file once, then only changes the keys it is asked to change;
//! a person's edits survive. Validation of values is the target's own business.

use std::path::Path;

use crate::error::{IoContext, Result};
use crate::paths::write_atomic;

/// One line of a `.env` file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Pair { key: String, value: String },
    Other(String),
}

/// A `.env` document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvFile {
    lines: Vec<Line>,
}

impl EnvFile {
    pub fn parse(text: &str) -> Self {
        let lines = text
            .lines()
            .map(|raw| {
                let trimmed = raw.trim();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    return Line::Other(raw.to_string());
                }
                match trimmed.split_once('=') {
                    Some((k, v)) => Line::Pair {
                        key: k.trim().to_string(),
                        value: unquote(v.trim()).to_string(),
                    },
                    None => Line::Other(raw.to_string()),
                }
            })
            .collect();
        Self { lines }
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        Ok(Self::parse(&text))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.render().as_bytes(), 0o600)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines.iter().rev().find_map(|l| match l {
            Line::Pair { key: k, value } if k == key => Some(value.as_str()),
            _ => None,
        })
    }

    /// Set `key`, replacing its value in place or appending it.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        for line in &mut self.lines {
            if let Line::Pair { key: k, value: v } = line
                && k == key
            {
                *v = value;
                return;
            }
        }
        self.lines.push(Line::Pair {
            key: key.to_string(),
            value,
        });
    }

    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::Pair { key: k, .. } if k == key));
        before != self.lines.len()
    }

    pub fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.lines.iter().filter_map(|l| match l {
            Line::Pair { key, value } => Some((key.as_str(), value.as_str())),
            Line::Other(_) => None,
        })
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Pair { key, value } => {
                    out.push_str(key);
                    out.push('=');
                    out.push_str(value);
                }
                Line::Other(s) => out.push_str(s),
            }
            out.push('\n');
        }
        out
    }
}

fn unquote(v: &str) -> &str {
    let b = v.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_keeps_comments_and_order() {
        let mut env = EnvFile::parse("# shop\nA=1\n\nB=\"two\"\n");
        assert_eq!(env.get("B"), Some("two"));
        env.set("A", "10");
        env.set("C", "3");
        assert_eq!(env.render(), "# shop\nA=10\n\nB=two\nC=3\n");
        assert!(env.remove("B"));
        assert_eq!(env.get("B"), None);
    }
}
