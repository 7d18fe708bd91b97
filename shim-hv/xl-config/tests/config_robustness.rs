//! Config text is untrusted input: no mutation of the valid corpus may make the
//! parser panic, and every error it returns names a line inside the file.

use std::path::Path;

use xl_config::DomainConfig;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const ALPHABET: &[char] = &[
    '\'', '"', '[', ']', ',', '=', '+', '-', ';', '#', '\n', '\\', ':', ' ', '0', '9', 'x', 'a',
    'w', '!', '(', 'é', '\t', '\r',
];

#[test]
fn mutated_corpus_never_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/valid");
    let mut seeds = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        seeds.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    seeds.sort();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut errors = 0;
    for _ in 0..20_000 {
        let seed = &seeds[rng.below(seeds.len())];
        let mut chars: Vec<char> = seed.chars().collect();
        for _ in 0..=rng.below(4) {
            let pos = rng.below(chars.len() + 1);
            match rng.below(3) {
                0 if pos < chars.len() => {
                    chars.remove(pos);
                }
                1 if pos < chars.len() => chars[pos] = ALPHABET[rng.below(ALPHABET.len())],
                _ => chars.insert(pos, ALPHABET[rng.below(ALPHABET.len())]),
            }
        }
        let text: String = chars.into_iter().collect();
        let lines = text.split('\n').count() as u32;
        match DomainConfig::parse_str("m.cfg", &text) {
            Ok(c) => {
                let _ = c.to_json();
                for w in &c.warnings {
                    assert!(w.line <= lines, "{w} in {text:?}");
                }
            }
            Err(e) => {
                errors += 1;
                assert!(e.line <= lines, "{e} in {text:?}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
    // The mutations do reach the error paths.
    assert!(errors > 1_000, "{errors}");
}
