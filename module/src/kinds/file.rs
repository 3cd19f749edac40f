//! Our development kinds `io.statefun-rs.file.v1/ingress` and `io.statefun-rs.file.v1/egress`:
//! a file (or `-` for stdin and stdout) to read records from and write them to, so that a
//! module can be tried without a broker.

use super::MetaId;
use crate::load::Loader;
use crate::model::{
    EgressLocation, EgressSpec, FileDeliverySemantic, FileEgress, FileIngress, IngressLocation,
    IngressSpec,
};
use crate::yaml::Node;

impl Loader<'_> {
    pub(super) fn file_ingress(&mut self, spec: &Node, path: &str, meta_id: MetaId<'_>) {
        let Some(o) = self.obj(
            spec,
            path,
            &[
                "id",
                "path",
                "valueType",
                "targets",
                "follow",
                "remoteMetadata",
            ],
        ) else {
            return;
        };
        let id = self.id(&o, meta_id);
        let file = self.req_str(&o, "path");
        let value_type = self.req_typename(&o, "valueType");
        let targets = self.targets(&o);
        let remote_metadata = self.remote_metadata(&o);
        let follow = match o.get("follow") {
            None => Some(false),
            Some(n) => self.boolean(n, &o.field("follow")),
        };
        let (Some((id, decl)), Some(file), Some(value_type), Some((targets, locs)), Some(follow)) =
            (id, file, value_type, targets, follow)
        else {
            return;
        };
        let spec_loc = self.location(o.mark, &o.path);
        self.add_ingress(
            id,
            decl,
            IngressSpec::File(FileIngress {
                path: file,
                value_type,
                targets,
                follow,
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

    pub(super) fn file_egress(&mut self, spec: &Node, path: &str, meta_id: MetaId<'_>) {
        let Some(o) = self.obj(spec, path, &["id", "path", "deliverySemantic"]) else {
            return;
        };
        let id = self.id(&o, meta_id);
        let file = self.req_str(&o, "path");
        let mut ds_loc = None;
        let semantic = match o.get("deliverySemantic") {
            None => Some(FileDeliverySemantic::AtLeastOnce),
            Some(n) => {
                let p = o.field("deliverySemantic");
                ds_loc = Some(self.location(n.mark, &p));
                let (tnode, tpath) = if n.scalar().is_some() {
                    (Some(n), p)
                } else {
                    match self.obj(n, &p, &["type"]) {
                        Some(so) => (self.req(&so, "type"), so.field("type")),
                        None => (None, p),
                    }
                };
                tnode
                    .and_then(|t| {
                        self.choice(
                            t,
                            &tpath,
                            "delivery semantic",
                            &["at-least-once", "exactly-once"],
                        )
                    })
                    .map(|c| {
                        if c == "exactly-once" {
                            FileDeliverySemantic::ExactlyOnce
                        } else {
                            FileDeliverySemantic::AtLeastOnce
                        }
                    })
            }
        };
        let (Some((id, decl)), Some(file), Some(semantic)) = (id, file, semantic) else {
            return;
        };
        let spec_loc = self.location(o.mark, &o.path);
        self.add_egress(
            id,
            decl,
            EgressSpec::File(FileEgress {
                path: file,
                delivery_semantic: semantic,
            }),
            EgressLocation {
                spec: spec_loc,
                delivery_semantic: ds_loc,
            },
        );
    }
}
