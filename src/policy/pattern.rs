//! Path patterns of policies, matched on the normalized path by whole segments:
//! `*` is one segment, `**` (last) any rest including nothing, `{name}` one segment
//! captured. `/fascicolo/{assistito}/**` matches `/fascicolo/RSSMRA80A01H501U` and
//! `/fascicolo/RSSMRA80A01H501U/documenti/cu`. A `;` ends a segment's name (matrix
//! parameters are data, as the router treats them).

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    One,
    Capture(String),
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("a pattern starts with `/`")]
    NotAbsolute,
    #[error("`**` may only be the last segment")]
    RestNotLast,
    #[error("a segment is empty or malformed: `{0}`")]
    Segment(String),
}

fn segment_name(seg: &str) -> &str {
    seg.split(';').next().unwrap_or(seg)
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let rest = text.strip_prefix('/').ok_or(PatternError::NotAbsolute)?;
        let mut parts = Vec::new();
        let segs: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for (i, seg) in segs.iter().enumerate() {
            let part = match *seg {
                "**" if i + 1 == segs.len() => Part::Rest,
                "**" => return Err(PatternError::RestNotLast),
                "*" => Part::One,
                s if s.starts_with('{') && s.ends_with('}') && s.len() > 2 => {
                    Part::Capture(s[1..s.len() - 1].to_string())
                }
                s if !s.is_empty() && !s.contains(['{', '}', '*']) => Part::Literal(s.to_string()),
                s => return Err(PatternError::Segment(s.to_string())),
            };
            parts.push(part);
        }
        Ok(Pattern {
            text: text.to_string(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path` (normalized, absolute) matches; literals compared exactly, or
    /// ASCII-case-insensitively when `fold_case`.
    pub fn matches(&self, path: &str, fold_case: bool) -> bool {
        self.capture(path, "", fold_case).is_some()
    }

    /// Matches `path` and returns the segment captured as `{name}` (`Some("")` when the
    /// pattern matches but has no such capture).
    pub fn capture<'p>(&self, path: &'p str, name: &str, fold_case: bool) -> Option<&'p str> {
        let rest = path.strip_prefix('/')?;
        let mut segs = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect::<Vec<_>>()
        };
        // A trailing slash is the same resource for the purpose of matching.
        if segs.last() == Some(&"") {
            segs.pop();
        }
        let mut captured: Option<&'p str> = None;
        let mut i = 0;
        for part in &self.parts {
            match part {
                Part::Rest => return Some(captured.unwrap_or("")),
                Part::One => {
                    segs.get(i)?;
                }
                Part::Capture(n) => {
                    let seg = segs.get(i)?;
                    if n == name {
                        captured = Some(segment_name(seg));
                    }
                }
                Part::Literal(l) => {
                    let seg = segment_name(segs.get(i)?);
                    let same = if fold_case {
                        seg.eq_ignore_ascii_case(l)
                    } else {
                        seg == l
                    };
                    if !same {
                        return None;
                    }
                }
            }
            i += 1;
        }
        (i == segs.len()).then(|| captured.unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_wildcards_and_captures() {
        let p = Pattern::parse("/fascicolo/{assistito}/**").unwrap();
        assert_eq!(
            p.capture("/fascicolo/RSSMRA80A01H501U", "assistito", false),
            Some("RSSMRA80A01H501U")
        );
        assert_eq!(
            p.capture("/fascicolo/RSSMRA80A01H501U/cu/2025", "assistito", false),
            Some("RSSMRA80A01H501U")
        );
        assert_eq!(
            p.capture("/fascicolo/X;jsessionid=1/cu", "assistito", false),
            Some("X")
        );
        assert!(!p.matches("/fascicolo", false));
        assert!(!p.matches("/fascicolox/A", false));
        let d = Pattern::parse("/domande/**").unwrap();
        assert!(d.matches("/domande", false));
        assert!(d.matches("/domande/", false));
        assert!(d.matches("/domande/nuova", false));
        assert!(!d.matches("/DOMANDE/nuova", false));
        assert!(d.matches("/DOMANDE/nuova", true));
        assert!(d.matches("/domande;x=1/nuova", false));
        let one = Pattern::parse("/a/*/c").unwrap();
        assert!(one.matches("/a/b/c", false) && !one.matches("/a/b/c/d", false));
        assert!(Pattern::parse("/**").unwrap().matches("/", false));
        assert_eq!(Pattern::parse("a"), Err(PatternError::NotAbsolute));
        assert_eq!(Pattern::parse("/**/x"), Err(PatternError::RestNotLast));
        assert!(Pattern::parse("/a{b}").is_err() && Pattern::parse("/a//b").is_err());
    }
}
