//! A reproducible (seeded) workload of cards and replies for the sample
//! data of `scripts/run-local`, the end-to-end tests and the benchmarks:
//! Korean and English text about mountains, authors, tags, timestamps,
//! and body sizes with a long tail (most a few hundred bytes, a few tens
//! of kilobytes).

use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MOUNTAINS: [&str; 10] = [
    "설악산",
    "한라산",
    "지리산",
    "북한산",
    "도봉산",
    "관악산",
    "소백산",
    "덕유산",
    "오대산",
    "계룡산",
];
const KO: [&str; 24] = [
    "등산",
    "산행",
    "단풍",
    "정상",
    "일출",
    "계곡",
    "코스",
    "후기",
    "초보",
    "추천",
    "주차",
    "날씨",
    "능선",
    "대피소",
    "하산",
    "입구",
    "풍경",
    "사진",
    "모임",
    "야간",
    "눈꽃",
    "바람",
    "물",
    "길",
];
const EN: [&str; 16] = [
    "hiking", "trail", "summit", "sunrise", "autumn", "leaves", "beginner", "course", "parking",
    "weather", "ridge", "shelter", "view", "photo", "group", "night",
];
const NAMES: [&str; 8] = [
    "김산악",
    "이등산",
    "박정상",
    "최계곡",
    "정능선",
    "hiker_kim",
    "trailrunner",
    "summit_lee",
];

/// The workload generator.
pub struct Workload {
    rng: StdRng,
    /// Ids of the cards generated so far.
    pub card_ids: Vec<ObjectId>,
    epoch_ms: i64,
}

impl Workload {
    /// A generator with a seed: the same seed gives the same documents.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            card_ids: vec![],
            epoch_ms: 1_735_689_600_000,
        }
    }

    fn word(&mut self) -> &'static str {
        if self.rng.random_bool(0.7) {
            KO[self.rng.random_range(0..KO.len())]
        } else {
            EN[self.rng.random_range(0..EN.len())]
        }
    }

    /// Words in a body: Pareto-like long tail, 8 to ~6,000 words.
    fn body_words(&mut self) -> usize {
        let u: f64 = self.rng.random_range(0.0..0.999);
        (8.0 / (1.0 - u).powf(0.95)).min(6000.0) as usize
    }

    fn text(&mut self, words: usize) -> String {
        let mut s = String::new();
        for i in 0..words {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(self.word());
        }
        s
    }

    /// Text of at least `bytes` bytes (whole words, UTF-8), for documents
    /// near a size limit.
    pub fn text_of_bytes(&mut self, bytes: usize) -> String {
        let mut s = String::with_capacity(bytes + 16);
        while s.len() < bytes {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(self.word());
        }
        s
    }

    fn at(&mut self) -> DateTime {
        let ms = self.epoch_ms + self.rng.random_range(0..31_536_000_000_i64);
        DateTime::from_millis(ms)
    }

    fn author(&mut self) -> Document {
        let id = self.rng.random_range(1..500_i32);
        doc! { "id": id, "name": NAMES[id as usize % NAMES.len()] }
    }

    /// A new card.
    pub fn card(&mut self) -> Document {
        let id = ObjectId::new();
        self.card_ids.push(id);
        let mountain = MOUNTAINS[self.rng.random_range(0..MOUNTAINS.len())];
        let title = format!("{mountain} {} {}", self.word(), self.word());
        let words = self.body_words();
        let body = format!("{mountain} {}", self.text(words));
        let tags: Vec<String> = (0..self.rng.random_range(1..4))
            .map(|_| self.word().to_string())
            .collect();
        let created = self.at();
        doc! {
            "_id": id,
            "title": title,
            "body": body,
            "author": self.author(),
            "tags": tags,
            "mountain": mountain,
            "likes": self.rng.random_range(0..200_i32),
            "created_at": created,
            "updated_at": created,
        }
    }

    /// A new reply to one of the cards generated so far (a random one).
    pub fn reply(&mut self) -> Option<Document> {
        if self.card_ids.is_empty() {
            return None;
        }
        let card = self.card_ids[self.rng.random_range(0..self.card_ids.len())];
        let words = self.rng.random_range(3..40);
        Some(doc! {
            "_id": ObjectId::new(),
            "card_id": card,
            "body": self.text(words),
            "author": self.author(),
            "created_at": self.at(),
        })
    }

    /// An update for a random existing card: `(filter, update)`.
    pub fn card_update(&mut self) -> Option<(Document, Document)> {
        if self.card_ids.is_empty() {
            return None;
        }
        let id = self.card_ids[self.rng.random_range(0..self.card_ids.len())];
        let likes = self.rng.random_range(0..500_i32);
        Some((
            doc! { "_id": id },
            doc! { "$set": { "likes": likes, "updated_at": DateTime::now() } },
        ))
    }

    /// A random card id to delete (removed from the known ids).
    pub fn card_to_delete(&mut self) -> Option<ObjectId> {
        if self.card_ids.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.card_ids.len());
        Some(self.card_ids.swap_remove(i))
    }
}

/// Posts written as people write them (particles, verb endings), for the
/// Korean search examples of `scripts/run-local`: a search for 단풍 finds
/// "단풍이", one for 설악산 finds "설악산에서" (the generated cards are
/// bare word lists). `(mountain, title, body)`.
pub const WRITTEN_POSTS: [(&str, &str, &str); 5] = [
    (
        "설악산",
        "설악산에서 단풍이 들었다",
        "지난 주말 설악산에서 단풍이 절정이었습니다. 대청봉으로 오르는 길에 단풍이 곱게 물들었어요.",
    ),
    (
        "지리산",
        "지리산 종주를 마치고",
        "성삼재에서 출발해 천왕봉까지 이틀 걸렸습니다. 대피소에서 하룻밤 묵었고 일출을 보았습니다.",
    ),
    (
        "한라산",
        "한라산 눈꽃 산행 후기",
        "백록담까지 올라가는 길이 미끄러웠지만 눈꽃이 아름다웠습니다. 아이젠을 꼭 챙기세요.",
    ),
    (
        "북한산",
        "북한산에 오르려면 어디에 주차하나요?",
        "주말에 북한산 백운대에 가려고 합니다. 주차하기 좋은 입구를 알려 주세요.",
    ),
    (
        "무등산",
        "무등산 입석대 사진",
        "무등산 입석대와 서석대를 다녀왔습니다. 날씨가 맑아서 사진이 잘 나왔어요.",
    ),
];

impl Workload {
    /// The [`WRITTEN_POSTS`] as cards (new ids, seeded authors and times).
    pub fn written_cards(&mut self) -> Vec<Document> {
        WRITTEN_POSTS
            .iter()
            .map(|(mountain, title, body)| {
                let id = ObjectId::new();
                self.card_ids.push(id);
                let created = self.at();
                doc! {
                    "_id": id,
                    "title": *title,
                    "body": *body,
                    "author": self.author(),
                    "tags": ["후기"],
                    "mountain": *mountain,
                    "likes": self.rng.random_range(0..200_i32),
                    "created_at": created,
                    "updated_at": created,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_posts_hold_the_inflected_forms_run_local_searches() {
        let cards = Workload::new(3).written_cards();
        assert_eq!(cards.len(), WRITTEN_POSTS.len());
        let titles: Vec<&str> = cards.iter().map(|c| c.get_str("title").unwrap()).collect();
        assert!(titles.contains(&"설악산에서 단풍이 들었다"));
        assert!(cards.iter().all(|c| c.get_str("mountain").is_ok()));
    }

    #[test]
    fn same_seed_same_text() {
        let (mut a, mut b) = (Workload::new(7), Workload::new(7));
        let (ca, cb) = (a.card(), b.card());
        assert_eq!(ca.get_str("body").unwrap(), cb.get_str("body").unwrap());
        assert_eq!(ca.get_str("title").unwrap(), cb.get_str("title").unwrap());
    }

    #[test]
    fn sizes_have_a_long_tail() {
        let mut w = Workload::new(1);
        let sizes: Vec<usize> = (0..2000)
            .map(|_| w.card().get_str("body").unwrap().len())
            .collect();
        let mut sorted = sizes.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        let max = sorted[sorted.len() - 1];
        assert!(median < 400, "median {median}");
        assert!(max > 10 * median, "max {max} vs median {median}");
        assert!(w.reply().unwrap().get_object_id("card_id").is_ok());
    }
}
