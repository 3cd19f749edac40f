//! Our development kind `io.statefun-rs.generator.v1/ingress`: synthetic records for
//! benchmarks and smoke tests, with the number of keys, the rate, the count and the value size.

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
        let (Some((id, decl)), Some(value_type), Some((targets, locs)), Some(rate)) =
            (id, value_type, targets, rate)
        else {
            return;
        };
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
