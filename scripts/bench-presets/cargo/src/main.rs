use clap::Parser;
use serde::{Deserialize, Serialize};

/// Counts the words of a text that match a pattern.
#[derive(Parser)]
struct Args {
    #[arg(long, default_value = r"\w+")]
    pattern: String,
    text: Vec<String>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Count {
    pattern: String,
    matches: usize,
}

fn count(pattern: &str, text: &str) -> Count {
    let re = regex::Regex::new(pattern).expect("a valid pattern");
    Count { pattern: pattern.to_string(), matches: re.find_iter(text).count() }
}

fn main() {
    let args = Args::parse();
    let c = count(&args.pattern, &args.text.join(" "));
    println!("{}", serde_json::to_string(&c).expect("serialises"));
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_words_and_round_trips() {
        let c = super::count(r"\w+", "one two three");
        assert_eq!(c.matches, 3);
        let back: super::Count = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
