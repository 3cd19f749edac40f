//! Our development kind `io.statefun-rs.generator.v1/ingress`: synthetic records for
//! benchmarks and smoke tests, with the number of keys, the rate, the count and the value size.

use statefun_sdk::types::{PRIMITIVE_TYPENAMES, STRING_TYPENAME};

use super::MetaId;
use crate::load::Loader;
use crate::model::{GeneratorIngress, IngressLocation, IngressSpec};
use crate::yaml::Node;

impl Loader<'_> {
    pub(super) fn generator_ingress(&mut self, spec: &Node, path: &str, meta_id: MetaId<'_>) {
        let Some(o) = self.obj(
            spec,
            path,
            &[
                "id",
                "valueType",
                "targets",
                "keys",
                "rate",
                "count",
                "remoteMetadata",
                "valueSize",
                "stamp",
                "keyOrder",
            ],
        ) else {
            return;
        };
        let id = self.id(&o, meta_id);
        let value_type = self.req_typename(&o, "valueType");
        let targets = self.targets(&o);
        let remote_metadata = self.remote_metadata(&o);
        let keys = self.opt_uint(&o, "keys", 1000, 1);
        let count = self.opt_uint(&o, "count", 0, 0);
        let value_size = self.opt_uint(&o, "valueSize", 100, 0);
        let rate = match o.get("rate") {
            None => Some(0.0),
            Some(n) => {
                let f = o.field("rate");
                match n.scalar().map(|s| s.trim().parse::<f64>()) {
                    Some(Ok(r)) if r.is_finite() && r >= 0.0 => Some(r),
                    _ => {
                        self.error(
                            n.mark,
                            &f,
                            "expected messages per second: a number ≥ 0 (0 = as fast as possible)",
                        );
                        None
                    }
                }
            }
        };
        // `sequential`: record s goes to id s % keys; `scrambled`: to the id at that place
        // of a fixed permutation of the ids.
        let scrambled_keys = match o.get("keyOrder") {
            None => Some(false),
            Some(n) => self
                .choice(
                    n,
                    &o.field("keyOrder"),
                    "key order",
                    &["sequential", "scrambled"],
                )
                .map(|order| order == "scrambled"),
        };
        let stamp_node = o.get("stamp");
        let stamp = match stamp_node {
            None => Some(false),
            Some(n) => self.boolean(n, &o.field("stamp")),
        };
        let (
            Some((id, decl)),
            Some(value_type),
            Some((targets, locs)),
            Some(rate),
            Some(stamp),
            Some(scrambled_keys),
        ) = (id, value_type, targets, rate, stamp, scrambled_keys)
        else {
            return;
        };
        if stamp {
            let mark = stamp_node.map_or(o.mark, |n| n.mark);
            // A stamp is `STAMP_DIGITS` decimal characters at the start of the value: only
            // strings and raw bytes have room for them, and only when they are that long
            // (the other primitives are the sequence number).
            let t = value_type.as_str();
            if t != STRING_TYPENAME && PRIMITIVE_TYPENAMES.contains(&t) {
                self.error(
                    mark,
                    &o.field("stamp"),
                    format!(
                        "a stamp needs a string or raw value; {value_type} values are the \
                         sequence number (use valueType: io.statefun.types/string)"
                    ),
                );
                return;
            }
            if value_size < GeneratorIngress::STAMP_DIGITS as u64 {
                self.error(
                    mark,
                    &o.field("stamp"),
                    format!(
                        "a stamp takes the first {digits} characters of each value; \
                         valueSize is {value_size} (set valueSize: {digits} or more)",
                        digits = GeneratorIngress::STAMP_DIGITS
                    ),
                );
                return;
            }
        }
        let spec_loc = self.location(o.mark, &o.path);
        self.add_ingress(
            id,
            decl,
            IngressSpec::Generator(GeneratorIngress {
                value_type,
                targets,
                keys,
                rate,
                count,
                value_size: usize::try_from(value_size).unwrap_or(usize::MAX),
                stamp,
                scrambled_keys,
            }),
            None,
            remote_metadata,
            IngressLocation {
                spec: spec_loc,
                targets: vec![locs],
                bad_records: None,
            },
        );
    }
}
