//! `io.statefun.kinesis.v1/ingress` and `io.statefun.kinesis.v1/egress`: the AWS region and
//! credentials, the streams (by name or ARN, checked against the region), and startup positions.

use std::collections::HashMap;

use super::MetaId;
use crate::fields::{index, Obj};
use crate::load::Loader;
use crate::model::{
    AwsCredentials, AwsRegion, EgressLocation, EgressSpec, IngressLocation, IngressSpec,
    KinesisEgress, KinesisIngress, KinesisStartupPosition, KinesisStream, Secret,
};
use crate::yaml::Node;

impl Loader<'_> {
    fn aws_region(&mut self, o: &Obj<'_>) -> Option<AwsRegion> {
        let Some(node) = o.get("awsRegion") else {
            return Some(AwsRegion::Default);
        };
        let path = o.field("awsRegion");
        let types = ["default", "specific", "custom-endpoint"];
        let ro = self.obj(node, &path, &["type", "id", "endpoint"])?;
        let tnode = self.req(&ro, "type")?;
        let t = self.choice(tnode, &ro.field("type"), "AWS region type", &types)?;
        let what = format!("region type `{t}`");
        match t.as_str() {
            "default" => {
                self.only(&ro, &["type"], &what);
                Some(AwsRegion::Default)
            }
            "specific" => {
                self.only(&ro, &["type", "id"], &what);
                let id = self.region_id(&ro)?;
                Some(AwsRegion::Specific(id))
            }
            _ => {
                let endpoint = self.req_str(&ro, "endpoint");
                let id = self.region_id(&ro);
                let endpoint = endpoint?;
                let ok = ["http://", "https://"]
                    .iter()
                    .any(|p| endpoint.starts_with(p) && endpoint.len() > p.len());
                if !ok {
                    let mark = ro.get("endpoint").map_or(ro.mark, |n| n.mark);
                    self.error(
                        mark,
                        &ro.field("endpoint"),
                        format!("`{endpoint}` is not an http:// or https:// URL, e.g. `http://localstack:4566`"),
                    );
                    return None;
                }
                Some(AwsRegion::CustomEndpoint { endpoint, id: id? })
            }
        }
    }

    fn region_id(&mut self, ro: &Obj<'_>) -> Option<String> {
        let id = self.req_str(ro, "id")?;
        let valid = id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            let mark = ro.get("id").map_or(ro.mark, |n| n.mark);
            self.error(
                mark,
                &ro.field("id"),
                format!("`{id}` is not an AWS region id (lower-case letters, digits and `-`, e.g. `us-east-1`)"),
            );
            return None;
        }
        Some(id)
    }

    fn aws_credentials(&mut self, o: &Obj<'_>) -> Option<AwsCredentials> {
        let Some(node) = o.get("awsCredentials") else {
            return Some(AwsCredentials::Default);
        };
        let path = o.field("awsCredentials");
        let types = ["default", "basic", "profile"];
        let co = self.obj(
            node,
            &path,
            &[
                "type",
                "accessKeyId",
                "secretAccessKey",
                "profile",
                "profileName",
                "profilePath",
            ],
        )?;
        let tnode = self.req(&co, "type")?;
        let t = self.choice(tnode, &co.field("type"), "AWS credentials type", &types)?;
        let what = format!("credentials type `{t}`");
        match t.as_str() {
            "default" => {
                self.only(&co, &["type"], &what);
                Some(AwsCredentials::Default)
            }
            "basic" => {
                self.only(&co, &["type", "accessKeyId", "secretAccessKey"], &what);
                let key = self.req_str(&co, "accessKeyId");
                let secret = self.req_str(&co, "secretAccessKey");
                Some(AwsCredentials::Basic {
                    access_key_id: key?,
                    secret_access_key: Secret::new(secret?),
                })
            }
            _ => {
                self.only(
                    &co,
                    &["type", "profile", "profileName", "profilePath"],
                    &what,
                );
                let name = match (co.has("profile"), co.has("profileName")) {
                    (true, true) => {
                        self.error(
                            co.mark,
                            &path,
                            "give either `profile` or `profileName`, not both",
                        );
                        return None;
                    }
                    (false, true) => self.opt_str(&co, "profileName")?,
                    (true, false) => self.opt_str(&co, "profile")?,
                    (false, false) => {
                        self.error(
                            co.mark,
                            &path,
                            "missing required field `profileName` (or `profile`)",
                        );
                        return None;
                    }
                };
                let profile_path = self.opt_str(&co, "profilePath");
                Some(AwsCredentials::Profile {
                    name,
                    path: profile_path,
                })
            }
        }
    }

    pub(super) fn kinesis_ingress(&mut self, spec: &Node, path: &str, meta_id: MetaId<'_>) {
        let Some(o) = self.obj(
            spec,
            path,
            &[
                "id",
                "awsRegion",
                "awsCredentials",
                "startupPosition",
                "streams",
                "clientConfigProperties",
                "badRecords",
                "remoteMetadata",
            ],
        ) else {
            return;
        };
        let id = self.id(&o, meta_id);
        let (bad_records, bad_loc, bad_ok) = self.bad_records(&o);
        let remote_metadata = self.remote_metadata(&o);
        let region = self.aws_region(&o);
        let credentials = self.aws_credentials(&o);
        let startup = match o.get("startupPosition") {
            None => Some(KinesisStartupPosition::Latest),
            Some(n) => self.kinesis_startup(n, &o.field("startupPosition")),
        };
        let properties = self.properties(&o, "clientConfigProperties");
        let mut streams = Vec::new();
        let mut target_locs = Vec::new();
        let mut ok = true;
        let mut names: HashMap<String, usize> = HashMap::new();
        if let Some(items) = self.list(&o, "streams", "stream") {
            let spath = o.field("streams");
            for (i, item) in items.iter().enumerate() {
                let p = index(&spath, i);
                let Some(so) = self.obj(item, &p, &["stream", "streamArn", "valueType", "targets"])
                else {
                    ok = false;
                    continue;
                };
                let stream = self.opt_str(&so, "stream");
                let arn = self.opt_str(&so, "streamArn");
                if !so.has("stream") && !so.has("streamArn") {
                    self.error(
                        so.mark,
                        &so.path,
                        "missing required field `stream` (or `streamArn`)",
                    );
                }
                let mut arn_ok = true;
                let mut stream_name = stream.clone();
                if let Some(a) = &arn {
                    let mark = so.get("streamArn").map_or(so.mark, |n| n.mark);
                    let field = so.field("streamArn");
                    match parse_kinesis_arn(a) {
                        Err(why) => {
                            self.error(mark, &field, why);
                            arn_ok = false;
                        }
                        Ok((arn_region, arn_name)) => {
                            if let Some(Some(r)) = region.as_ref().map(AwsRegion::id) {
                                if r != arn_region {
                                    self.error(mark, &field, format!("the stream ARN is in region `{arn_region}`, but `awsRegion` is `{r}`"));
                                    arn_ok = false;
                                }
                            }
                            match &stream {
                                Some(s) if s != arn_name => {
                                    self.error(mark, &field, format!("the stream ARN names stream `{arn_name}`, but `stream` is `{s}`"));
                                    arn_ok = false;
                                }
                                Some(_) => {}
                                None => stream_name = Some(arn_name.to_string()),
                            }
                        }
                    }
                }
                if let Some(s) = &stream_name {
                    let mark = so
                        .get("stream")
                        .or(so.get("streamArn"))
                        .map_or(so.mark, |n| n.mark);
                    if let Some(first) = names.insert(s.clone(), mark.line) {
                        self.error(mark, &p, format!("stream `{s}` is listed twice in this ingress (first at line {first}); merge the targets into one entry"));
                        ok = false;
                    }
                }
                let value_type = self.req_typename(&so, "valueType");
                let targets = self.targets(&so);
                match (stream_name, value_type, targets, arn_ok) {
                    (Some(stream), Some(value_type), Some((targets, locs)), true) => {
                        streams.push(KinesisStream {
                            stream,
                            arn,
                            value_type,
                            targets,
                        });
                        target_locs.push(locs);
                    }
                    _ => ok = false,
                }
            }
        } else {
            ok = false;
        }
        let (Some((id, decl)), Some(region), Some(credentials), Some(startup), true, true) =
            (id, region, credentials, startup, ok, bad_ok)
        else {
            return;
        };
        let spec_loc = self.location(o.mark, &o.path);
        self.add_ingress(
            id,
            decl,
            IngressSpec::Kinesis(KinesisIngress {
                aws_region: region,
                aws_credentials: credentials,
                startup_position: startup,
                streams,
                client_config_properties: properties,
            }),
            bad_records,
            remote_metadata,
            IngressLocation {
                spec: spec_loc,
                targets: target_locs,
                bad_records: bad_loc,
            },
        );
    }

    fn kinesis_startup(&mut self, node: &Node, path: &str) -> Option<KinesisStartupPosition> {
        let types = ["latest", "trim-horizon", "earliest", "at-timestamp", "date"];
        if node.scalar().is_some() {
            let t = self.choice(node, path, "startup position", &types)?;
            return match t.as_str() {
                "latest" => Some(KinesisStartupPosition::Latest),
                "trim-horizon" | "earliest" => Some(KinesisStartupPosition::TrimHorizon),
                _ => {
                    self.error(node.mark, path, format!("`{t}` needs a time; write it as a mapping with `type: {t}` and `timestamp`"));
                    None
                }
            };
        }
        let o = self.obj(node, path, &["type", "timestamp", "date"])?;
        let tnode = self.req(&o, "type")?;
        let t = self.choice(tnode, &o.field("type"), "startup position", &types)?;
        let what = format!("startup position `{t}`");
        match t.as_str() {
            "latest" => {
                self.only(&o, &["type"], &what);
                Some(KinesisStartupPosition::Latest)
            }
            "trim-horizon" | "earliest" => {
                self.only(&o, &["type"], &what);
                Some(KinesisStartupPosition::TrimHorizon)
            }
            _ => self.timestamp(&o).map(KinesisStartupPosition::AtTimestamp),
        }
    }

    pub(super) fn kinesis_egress(&mut self, spec: &Node, path: &str, meta_id: MetaId<'_>) {
        let Some(o) = self.obj(
            spec,
            path,
            &[
                "id",
                "awsRegion",
                "awsCredentials",
                "streamName",
                "maxOutstandingRecords",
                "clientConfigProperties",
                "recordIds",
            ],
        ) else {
            return;
        };
        let id = self.id(&o, meta_id);
        let region = self.aws_region(&o);
        let credentials = self.aws_credentials(&o);
        let stream = self.req_str(&o, "streamName");
        if let (Some(s), Some(n)) = (&stream, o.get("streamName")) {
            if s.starts_with("arn:") {
                self.error(
                    n.mark,
                    &o.field("streamName"),
                    "`streamName` is the short stream name, not an ARN",
                );
            }
        }
        let max = self.opt_uint(&o, "maxOutstandingRecords", 1000, 1);
        let properties = self.properties(&o, "clientConfigProperties");
        // statefun-rs extension: frame records with a deterministic id.
        let record_ids = match o.get("recordIds") {
            None => Some(false),
            Some(n) => self.boolean(n, &o.field("recordIds")),
        };
        let (Some((id, decl)), Some(region), Some(credentials), Some(stream), Some(record_ids)) =
            (id, region, credentials, stream, record_ids)
        else {
            return;
        };
        let spec_loc = self.location(o.mark, &o.path);
        self.add_egress(
            id,
            decl,
            EgressSpec::Kinesis(KinesisEgress {
                aws_region: region,
                aws_credentials: credentials,
                stream_name: stream,
                max_outstanding_records: usize::try_from(max).unwrap_or(usize::MAX),
                client_config_properties: properties,
                record_ids,
            }),
            EgressLocation {
                spec: spec_loc,
                delivery_semantic: None,
            },
        );
    }
}

/// Checks `arn:<partition>:kinesis:<region>:<account>:stream/<name>`; returns (region, name).
pub(crate) fn parse_kinesis_arn(arn: &str) -> Result<(&str, &str), String> {
    let shape = "expected `arn:aws:kinesis:<region>:<account>:stream/<name>`";
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" {
        return Err(format!("malformed stream ARN `{arn}`: {shape}"));
    }
    let (partition, service, region, account, resource) =
        (parts[1], parts[2], parts[3], parts[4], parts[5]);
    if !(partition == "aws" || partition.starts_with("aws-")) {
        return Err(format!(
            "malformed stream ARN `{arn}`: unknown partition `{partition}`; {shape}"
        ));
    }
    if service != "kinesis" {
        return Err(format!(
            "malformed stream ARN `{arn}`: service `{service}` is not `kinesis`; {shape}"
        ));
    }
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "malformed stream ARN `{arn}`: `{region}` is not a region; {shape}"
        ));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "malformed stream ARN `{arn}`: the account `{account}` must be 12 digits; {shape}"
        ));
    }
    let Some(name) = resource.strip_prefix("stream/") else {
        return Err(format!(
            "malformed stream ARN `{arn}`: the resource must be `stream/<name>`; {shape}"
        ));
    };
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "malformed stream ARN `{arn}`: stream name `{name}` must be 1-128 letters, digits, `_`, `.` or `-`"
        ));
    }
    Ok((region, name))
}
