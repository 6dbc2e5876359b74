//! Every input the fuzzer found (tests/fixtures/fuzz/TARGET/, copied there by
//! tools/fuzz.sh) replayed through its target's function: each must now end in an
//! answer or an error, never a panic. A few hostile inputs of each kind run too, so the
//! targets themselves are exercised even where nothing was found.

mod common;

use scotd::fuzzing;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("safetensors", fuzzing::safetensors),
    ("config", fuzzing::config),
    ("datasets", fuzzing::datasets),
    ("chat_template", fuzzing::chat_template),
    ("verifier", fuzzing::verifier),
];

#[test]
fn every_fuzz_finding_is_handled() {
    for (name, target) in TARGETS {
        let dir = common::fixture(&format!("fuzz/{name}"));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // nothing found for this target yet
        };
        for entry in entries {
            let path = entry.unwrap().path();
            target(&std::fs::read(&path).unwrap());
        }
    }
}

#[test]
fn hostile_inputs_of_every_kind_are_handled() {
    let header_past_the_file = [&0xFFFF_FFFFu64.to_le_bytes()[..], b"{}"].concat();
    let huge_shape = br#"{"model_type": "llama", "hidden_size": 9223372036854775807, "num_hidden_layers": 9223372036854775807, "num_attention_heads": 1, "intermediate_size": 9223372036854775807, "vocab_size": 9223372036854775807}"#;
    let cases: [&[u8]; 6] = [
        b"",
        b"\xFF\xFE\x00garbage\n{\"question\": 1}\n[",
        &header_past_the_file,
        huge_shape,
        b"{% for x in range(3) %}{{ x }}{% endfor %}{{ messages[9].content }}\x00\\boxed{",
        b"1e999\n\\boxed{\\frac{\\frac{\\frac{1}{2}}{3}}{4}}",
    ];
    for (_, target) in TARGETS {
        for case in cases {
            target(case);
        }
    }
}
