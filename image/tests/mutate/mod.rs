//! Mutations for the proptest fuzz targets (shared by image's archive_fuzz and registry's
//! responses_fuzz): byte-level edits of any input, and structural edits of JSON documents
//! (a value at a random path replaced by one meant to break a reader, or removed).
#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::Value;

/// Byte-level mutations: flips, overwrites, a cut, an insertion.
#[derive(Debug, Clone)]
pub enum ByteOp {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

pub fn byte_op() -> impl Strategy<Value = ByteOp> {
    prop_oneof![
        6 => (any::<usize>(), 1..=255u8).prop_map(|(i, m)| ByteOp::Flip(i, m)),
        1 => any::<usize>().prop_map(ByteOp::Truncate),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..600))
            .prop_map(|(i, b)| ByteOp::Insert(i, b)),
    ]
}

pub fn apply(bytes: &[u8], ops: &[ByteOp]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    for op in ops {
        if v.is_empty() {
            break;
        }
        match op {
            ByteOp::Flip(i, m) => {
                let i = i % v.len();
                v[i] ^= m;
            }
            ByteOp::Truncate(i) => v.truncate(i % v.len()),
            ByteOp::Insert(i, b) => {
                let i = i % v.len();
                v.splice(i..i, b.iter().copied());
            }
        }
    }
    v
}

/// JSON values meant to break a reader's assumptions.
pub fn nasty_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(Value::Bool(true)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!("")),
        Just(serde_json::json!("../../../etc/passwd")),
        Just(serde_json::json!("/abs/path")),
        Just(serde_json::json!("sha256:")),
        Just(serde_json::json!(
            "sha256:0000000000000000000000000000000000000000000000000000000000000000"
        )),
        Just(serde_json::json!("md5:d41d8cd98f00b204e9800998ecf8427e")),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!([[[[[[[[[[]]]]]]]]]])),
        "[ -~]{0,40}".prop_map(Value::String),
    ]
}

/// A structural mutation of one JSON document: the value at a random path replaced, or the
/// key there removed.
#[derive(Debug, Clone)]
pub struct JsonOp {
    pub path: Vec<usize>,
    pub remove: bool,
    pub value: Value,
}

pub fn json_op() -> impl Strategy<Value = JsonOp> {
    (
        prop::collection::vec(any::<usize>(), 0..6),
        any::<bool>(),
        nasty_value(),
    )
        .prop_map(|(path, remove, value)| JsonOp {
            path,
            remove,
            value,
        })
}

pub fn mutate_json(doc: &mut Value, op: &JsonOp) {
    replace_at(doc, &op.path, op.remove, &op.value);
}

/// Follow `path` (each step an index into an object's keys or an array) and replace what is
/// there with `value`, or remove it; where the path runs out of containers, replace there.
pub fn replace_at(at: &mut Value, path: &[usize], remove: bool, value: &Value) {
    let Some((&step, rest)) = path.split_first() else {
        *at = value.clone();
        return;
    };
    match at {
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(step % map.len()).unwrap().clone();
            if rest.is_empty() && remove {
                map.remove(&key);
            } else {
                replace_at(map.get_mut(&key).unwrap(), rest, remove, value);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = step % items.len();
            if rest.is_empty() && remove {
                items.remove(i);
            } else {
                replace_at(&mut items[i], rest, remove, value);
            }
        }
        _ => *at = value.clone(),
    }
}
