//! Loads the sample data set (seeded cards and replies, plus the few
//! written posts of `Workload::written_cards`) into MongoDB.
//!
//! `sample-data --uri URI --db mountain --cards 300 --replies 600 [--seed 42]`

use e2e_tests::workload::Workload;
use mongodb::bson::Document;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("sample-data --uri URI --db DB --cards N --replies N --seed S [--if-empty]");
        println!("sample-data --uri URI --db DB --count COLLECTION");
        return Ok(());
    }
    let uri = arg(&args, "--uri", &e2e_tests::mongodb_uri());
    let db = arg(&args, "--db", "mountain");
    let cards: usize = arg(&args, "--cards", "300").parse()?;
    let replies: usize = arg(&args, "--replies", "600").parse()?;
    let seed: u64 = arg(&args, "--seed", "42").parse()?;
    let client = mongodb::Client::with_uri_str(&uri).await?;
    let db = client.database(&db);
    if let Some(i) = args.iter().position(|a| a == "--count") {
        let coll = args.get(i + 1).map_or("card", String::as_str);
        let n = db
            .collection::<Document>(coll)
            .count_documents(mongodb::bson::doc! {})
            .await?;
        println!("{n}");
        return Ok(());
    }
    if args.iter().any(|a| a == "--if-empty")
        && db
            .collection::<Document>("card")
            .estimated_document_count()
            .await?
            > 0
    {
        println!("{} already holds cards: no sample data loaded", db.name());
        return Ok(());
    }
    let mut w = Workload::new(seed);
    let mut docs: Vec<Document> = (0..cards).map(|_| w.card()).collect();
    let written = w.written_cards();
    let n_written = written.len();
    docs.extend(written);
    for chunk in docs.chunks(100) {
        db.collection::<Document>("card")
            .insert_many(chunk.to_vec())
            .await?;
    }
    let docs: Vec<Document> = (0..replies).filter_map(|_| w.reply()).collect();
    for chunk in docs.chunks(100) {
        db.collection::<Document>("reply")
            .insert_many(chunk.to_vec())
            .await?;
    }
    println!(
        "loaded {cards} cards (+{n_written} written posts) and {replies} replies into {}",
        db.name()
    );
    Ok(())
}
