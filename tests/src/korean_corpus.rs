//! Real Korean text nobody on this project wrote, for the search relevance
//! test: the Constitution of the Republic of Korea and ten National
//! Assembly bills shipped in the `konlpy==0.6.0` wheel, fetched into the
//! cache by `scripts/korean-corpus` (pinned by hash; the texts are never
//! committed). Cut into documents: the preamble, each article (제N조) and
//! each article of the addenda (부칙) of the constitution, and each bill
//! whole (title = its first line).

use std::path::{Path, PathBuf};
use std::process::Command;

/// One document of the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    /// `kolaw-preamble`, `kolaw-N`, `kolaw-addenda-N`, `kobill-NNNNNNN`.
    pub id: String,
    /// `전문`, `제N조`, `부칙 제N조`, or the bill's name.
    pub title: String,
    /// The text.
    pub body: String,
}

/// The corpus folder (runs `scripts/korean-corpus`, which downloads once).
pub fn corpus_dir() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/korean-corpus");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "scripts/korean-corpus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Every document of the corpus in `dir` (see the module documentation).
pub fn documents(dir: &Path) -> Vec<Doc> {
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
            .replace("\r\n", "\n")
    };
    let mut docs = constitution(&read(dir.join("kolaw/constitution.txt")));
    let mut bills: Vec<PathBuf> = std::fs::read_dir(dir.join("kobill"))
        .expect("kobill folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    bills.sort();
    for p in bills {
        let text = read(p.clone());
        let (title, body) = text.trim().split_once('\n').unwrap_or((text.trim(), ""));
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("bill");
        docs.push(Doc {
            id: format!("kobill-{stem}"),
            title: title.trim().to_string(),
            body: body.to_string(),
        });
    }
    docs
}

/// `제N조` followed by a space (or nothing) at the start of `line`: `N`
/// and the rest of the line.
fn article_start(line: &str) -> Option<(u32, &str)> {
    let rest = line.strip_prefix('제')?;
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let n = rest.get(..digits)?.parse().ok()?;
    let after = rest.get(digits..)?.strip_prefix('조')?;
    (after.is_empty() || after.starts_with(char::is_whitespace)).then(|| (n, after.trim()))
}

/// A chapter or section heading (`제1장 총강`, `제1절 대통령`).
fn heading(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('제') else {
        return false;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    rest.starts_with("장 ") || rest.starts_with("절 ")
}

fn constitution(text: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    let mut current = Doc {
        id: "kolaw-preamble".into(),
        title: "전문".into(),
        body: String::new(),
    };
    let mut addenda = false;
    // The first line is the title, 대한민국헌법.
    for line in text.lines().skip(1).map(str::trim) {
        if heading(line) {
            continue;
        }
        if line.starts_with("펼침") && line.contains("부칙") {
            addenda = true;
            continue;
        }
        if let Some((n, rest)) = article_start(line) {
            docs.push(std::mem::replace(
                &mut current,
                Doc {
                    id: if addenda {
                        format!("kolaw-addenda-{n}")
                    } else {
                        format!("kolaw-{n}")
                    },
                    title: if addenda {
                        format!("부칙 제{n}조")
                    } else {
                        format!("제{n}조")
                    },
                    body: rest.to_string(),
                },
            ));
        } else if !line.is_empty() {
            if !current.body.is_empty() {
                current.body.push('\n');
            }
            current.body.push_str(line);
        }
    }
    docs.push(current);
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn articles_and_headings_are_told_apart() {
        assert_eq!(
            article_start("제1조 ① 대한민국은"),
            Some((1, "① 대한민국은"))
        );
        assert_eq!(article_start("제130조"), Some((130, "")));
        assert_eq!(article_start("제1항의 탄핵소추는"), None);
        assert_eq!(article_start("제63조제2항"), None);
        assert_eq!(article_start("제조"), None);
        assert!(heading("제10장 헌법개정"));
        assert!(heading("제1절 대통령"));
        assert!(!heading("제1조 이 헌법은"));
    }

    #[test]
    fn the_constitution_is_cut_into_its_articles() {
        let text = "대한민국헌법\n\n전문 글\n  제1장 총강\n  제1조 ① 가\n②나\n  제2조 다\n\n 펼침  부칙 <헌법>\n\n제1조 라\n";
        let d = constitution(text);
        let ids: Vec<&str> = d.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(
            ids,
            ["kolaw-preamble", "kolaw-1", "kolaw-2", "kolaw-addenda-1"]
        );
        assert_eq!(d[0].body, "전문 글");
        assert_eq!(d[1].body, "① 가\n②나");
        assert_eq!(d[3].title, "부칙 제1조");
    }
}
