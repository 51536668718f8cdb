//! `--iam`: identities from an IAM-compatible source (another Feiyun region) into the
//! region — customer-managed policies, groups with their attached and inline policies,
//! roles with their trust policies and theirs, users with theirs and their group
//! memberships, and the tags of users and roles — through the IAM query API at both ends,
//! as the signed-in principals.
//!
//! Secrets never travel: an access key's secret and an MFA device's seed cannot be read back
//! from IAM, so each user's keys and devices are reported for the operator to issue and
//! enrol anew, never invented. A trust policy names the source's account: that account
//! becomes this one, and a role whose trust policy names any other account is reported,
//! not created, since that number may be another tenant here. The source is not
//! trusted with what already exists here: an identity that exists at the destination is
//! left exactly as it is (no attachment, inline policy or membership added to it) and
//! reported, and a user is added only to groups this run created. Managed-policy ARNs name
//! the source's account: an attachment is made only to a policy this run created from the
//! source policy it names (by that policy's listed name, never the ARN's text); AWS managed
//! policies (`arn:aws:iam::aws:policy/…`) keep their ARN.

use std::collections::HashMap;

use crate::client::{ClientError, S3Client};
use crate::{Error, Failure, xml};

/// What `--iam` did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IamSummary {
    /// `policy NAME`, `group NAME`, `user NAME` created (with `dry_run`: to be created).
    pub created: Vec<String>,
    /// The same, found already at the destination and left as they are.
    pub existing: Vec<String>,
    /// Attachments, inline policies and memberships written.
    pub links: u64,
    /// `USER: N access key(s)`: secrets IAM cannot give back, to be issued anew.
    pub keys_not_copied: Vec<String>,
    /// `USER: N MFA device(s)`: seeds IAM cannot give back, to be enrolled anew.
    pub mfa_not_copied: Vec<String>,
    pub failures: Vec<Failure>,
}

/// What is written at the destination, and the summary of it.
pub(crate) struct Writer<'a> {
    dst: &'a S3Client,
    dry_run: bool,
    out: IamSummary,
}

struct Iam<'a> {
    src: &'a S3Client,
    w: Writer<'a>,
    /// Source managed-policy ARN → destination ARN, for the policies this run created.
    arns: HashMap<String, String>,
    /// Groups this run created: the only ones a copied user is added to.
    groups: std::collections::HashSet<String>,
    /// This region's account id, for the trust policies of copied roles.
    account: Option<String>,
}

/// Who the destination's credentials sign as: STS GetCallerIdentity's answer.
pub(crate) async fn caller(dst: &S3Client) -> Result<String, Error> {
    dst.query_api("sts", &[("Action", "GetCallerIdentity")])
        .await
        .map_err(|e| Error::Dest(format!("STS GetCallerIdentity: {e}")))
}

fn err(what: &str, e: ClientError) -> Error {
    Error::Source(format!("IAM {what}: {e}"))
}

/// Every `member` of a listing, across pages (`Marker`, `IsTruncated`).
pub(crate) async fn list(
    c: &S3Client,
    params: &[(&str, &str)],
) -> Result<Vec<String>, ClientError> {
    // More identities than any account holds: a source that pages on past it, or repeats a
    // marker, is broken or hostile.
    const MAX_ITEMS: usize = 100_000;
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    loop {
        if out.len() > MAX_ITEMS {
            return Err(ClientError::Invalid(format!(
                "the source listed more than {MAX_ITEMS} identities"
            )));
        }
        let mut p: Vec<(&str, &str)> = params.to_vec();
        p.push(("MaxItems", "1000"));
        if let Some(m) = &marker {
            p.push(("Marker", m));
        }
        let text = c.query_api("iam", &p).await?;
        out.extend(xml::blocks(&text, "member").iter().map(|m| (*m).to_owned()));
        match xml::field(&text, "Marker") {
            Some(m) if xml::field(&text, "IsTruncated").as_deref() == Some("true") => {
                if !seen.insert(m.clone()) {
                    return Err(ClientError::Invalid(
                        "the source's listing repeats a page marker".into(),
                    ));
                }
                marker = Some(m)
            }
            _ => return Ok(out),
        }
    }
}

/// A policy document as IAM answers it: URL-encoded inside the XML.
fn document(text: &str, tag: &str) -> Option<String> {
    let raw = xml::field(text, tag)?;
    Some(xml::url_decode(&raw).unwrap_or(raw))
}

impl<'a> Writer<'a> {
    pub(crate) fn new(dst: &'a S3Client, dry_run: bool) -> Self {
        Self {
            dst,
            dry_run,
            out: IamSummary::default(),
        }
    }

    pub(crate) fn finish(self) -> IamSummary {
        self.out
    }

    pub(crate) fn fail(&mut self, what: String, e: impl std::fmt::Display) {
        self.out.failures.push(Failure {
            key: format!("(iam) {what}"),
            error: e.to_string(),
        });
    }

    /// Creates one entity; `Ok(true)` if it was created, `Ok(false)` if it was there.
    pub(crate) async fn create(
        &mut self,
        what: String,
        params: &[(&str, &str)],
    ) -> Result<bool, ()> {
        if self.dry_run {
            self.out.created.push(what);
            return Ok(true);
        }
        match self.dst.query_api("iam", params).await {
            Ok(_) => {
                self.out.created.push(what);
                Ok(true)
            }
            Err(e) if e.code() == Some("EntityAlreadyExists") => {
                self.out.existing.push(what);
                Ok(false)
            }
            Err(e) => {
                self.fail(what, e);
                Err(())
            }
        }
    }

    /// An attachment, inline policy, membership or key at the destination; whether it was
    /// made (or, dry, would be).
    pub(crate) async fn link(&mut self, what: String, params: &[(&str, &str)]) -> bool {
        if self.dry_run {
            self.out.links += 1;
            return true;
        }
        match self.dst.query_api("iam", params).await {
            Ok(_) => {
                self.out.links += 1;
                true
            }
            Err(e) => {
                self.fail(what, e);
                false
            }
        }
    }
}

impl Iam<'_> {
    fn mapped(&self, arn: &str) -> Option<String> {
        if arn.starts_with("arn:aws:iam::aws:policy/") {
            return Some(arn.to_owned());
        }
        self.arns.get(arn).cloned()
    }

    async fn policies(&mut self) -> Result<(), Error> {
        let listed = list(self.src, &[("Action", "ListPolicies"), ("Scope", "Local")])
            .await
            .map_err(|e| err("ListPolicies", e))?;
        let mut created: Vec<(String, String)> = Vec::new();
        for p in listed {
            let (Some(name), Some(arn)) = (xml::field(&p, "PolicyName"), xml::field(&p, "Arn"))
            else {
                continue;
            };
            let path = xml::field(&p, "Path").unwrap_or_else(|| "/".into());
            let version = xml::field(&p, "DefaultVersionId").unwrap_or_else(|| "v1".into());
            let text = match self
                .src
                .query_api(
                    "iam",
                    &[
                        ("Action", "GetPolicyVersion"),
                        ("PolicyArn", &arn),
                        ("VersionId", &version),
                    ],
                )
                .await
            {
                Ok(t) => t,
                Err(e) => {
                    self.w.fail(format!("policy {name}"), e);
                    continue;
                }
            };
            let Some(doc) = document(&text, "Document") else {
                self.w
                    .fail(format!("policy {name}"), "the source sent no document");
                continue;
            };
            let mut params = vec![
                ("Action", "CreatePolicy"),
                ("PolicyName", name.as_str()),
                ("Path", path.as_str()),
                ("PolicyDocument", doc.as_str()),
            ];
            let description = xml::field(&p, "Description");
            if let Some(d) = &description {
                params.push(("Description", d));
            }
            if self.w.create(format!("policy {name}"), &params).await == Ok(true) {
                created.push((arn, name));
            }
        }
        // The destination's ARNs of the policies just created, by the name they were
        // created under (the account in their ARNs is this region's).
        if self.w.dry_run {
            self.arns = created.into_iter().map(|(a, _)| (a.clone(), a)).collect();
            return Ok(());
        }
        let here = list(
            self.w.dst,
            &[("Action", "ListPolicies"), ("Scope", "Local")],
        )
        .await
        .map_err(|e| Error::Dest(format!("IAM ListPolicies: {e}")))?;
        let by_name: HashMap<String, String> = here
            .iter()
            .filter_map(|p| Some((xml::field(p, "PolicyName")?, xml::field(p, "Arn")?)))
            .collect();
        for (src, name) in created {
            if let Some(a) = by_name.get(&name) {
                self.arns.insert(src, a.clone());
            }
        }
        Ok(())
    }

    /// The attached and inline policies of a group or user (`kind` is `Group` or `User`).
    async fn policies_of(&mut self, kind: &str, name: &str) -> Result<(), Error> {
        let name_param = format!("{kind}Name");
        let attached = list(
            self.src,
            &[
                ("Action", &format!("ListAttached{kind}Policies")),
                (&name_param, name),
            ],
        )
        .await
        .map_err(|e| err("ListAttached…Policies", e))?;
        for a in attached {
            let Some(arn) = xml::field(&a, "PolicyArn") else {
                continue;
            };
            let what = format!("{} {name}: attach {arn}", kind.to_lowercase());
            match self.mapped(&arn) {
                Some(here) => {
                    self.w
                        .link(
                            what,
                            &[
                                ("Action", &format!("Attach{kind}Policy")),
                                (&name_param, name),
                                ("PolicyArn", &here),
                            ],
                        )
                        .await;
                }
                None => self.w.fail(what, "no such policy was copied"),
            }
        }
        let inline = list(
            self.src,
            &[
                ("Action", &format!("List{kind}Policies")),
                (&name_param, name),
            ],
        )
        .await
        .map_err(|e| err("List…Policies", e))?;
        for policy in inline {
            let policy = xml::unescape(&policy);
            let what = format!("{} {name}: inline policy {policy}", kind.to_lowercase());
            let text = match self
                .src
                .query_api(
                    "iam",
                    &[
                        ("Action", &format!("Get{kind}Policy")),
                        (&name_param, name),
                        ("PolicyName", &policy),
                    ],
                )
                .await
            {
                Ok(t) => t,
                Err(e) => {
                    self.w.fail(what, e);
                    continue;
                }
            };
            let Some(doc) = document(&text, "PolicyDocument") else {
                self.w.fail(what, "the source sent no document");
                continue;
            };
            self.w
                .link(
                    what,
                    &[
                        ("Action", &format!("Put{kind}Policy")),
                        (&name_param, name),
                        ("PolicyName", &policy),
                        ("PolicyDocument", &doc),
                    ],
                )
                .await;
        }
        Ok(())
    }

    /// The source's tags of a user or role, as the `Tags.member.N.*` parameters of its
    /// creation here. A source that cannot list them is a failure of that identity, which
    /// is then created without them.
    async fn tags_of(&mut self, kind: &str, name: &str) -> Vec<(String, String)> {
        let listed = list(
            self.src,
            &[
                ("Action", &format!("List{kind}Tags")),
                (&format!("{kind}Name"), name),
            ],
        )
        .await;
        let tags = match listed {
            Ok(t) => t,
            Err(e) => {
                let what = format!("{} {name}: tags", kind.to_lowercase());
                self.w.fail(what, e);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for t in tags {
            let Some(key) = xml::field(&t, "Key") else {
                continue;
            };
            let n = out.len() / 2 + 1;
            out.push((format!("Tags.member.{n}.Key"), key));
            out.push((
                format!("Tags.member.{n}.Value"),
                xml::field(&t, "Value").unwrap_or_default(),
            ));
        }
        out
    }

    /// This region's account id (STS GetCallerIdentity), once.
    async fn account(&mut self) -> Result<String, Error> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let me = caller(self.w.dst).await?;
        let a = xml::field(&me, "Account")
            .ok_or_else(|| Error::Dest("STS GetCallerIdentity named no account".into()))?;
        self.account = Some(a.clone());
        Ok(a)
    }

    async fn roles(&mut self) -> Result<(), Error> {
        let listed = list(self.src, &[("Action", "ListRoles")])
            .await
            .map_err(|e| err("ListRoles", e))?;
        for r in listed {
            let Some(name) = xml::field(&r, "RoleName") else {
                continue;
            };
            let what = format!("role {name}");
            let path = xml::field(&r, "Path").unwrap_or_else(|| "/".into());
            let Some(trust) = document(&r, "AssumeRolePolicyDocument") else {
                self.w.fail(what, "the source sent no trust policy");
                continue;
            };
            let source_account = xml::field(&r, "Arn")
                .and_then(|a| a.split(':').nth(4).map(str::to_owned))
                .unwrap_or_default();
            let here = self.account().await?;
            let trust = match trust_here(&trust, &source_account, &here) {
                Ok(t) => t,
                Err(other) => {
                    self.w.fail(
                        what,
                        format!(
                            "its trust policy names account {other}, neither the source's nor \
                             this region's: create it by hand"
                        ),
                    );
                    continue;
                }
            };
            let description = xml::field(&r, "Description");
            let max = xml::field(&r, "MaxSessionDuration");
            let tags = self.tags_of("Role", &name).await;
            let mut params = vec![
                ("Action", "CreateRole"),
                ("RoleName", name.as_str()),
                ("Path", path.as_str()),
                ("AssumeRolePolicyDocument", trust.as_str()),
            ];
            if let Some(d) = &description {
                params.push(("Description", d));
            }
            if let Some(m) = &max {
                params.push(("MaxSessionDuration", m));
            }
            params.extend(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            if self.w.create(what, &params).await == Ok(true) {
                self.policies_of("Role", &name).await?;
            }
        }
        Ok(())
    }

    async fn groups(&mut self) -> Result<(), Error> {
        let listed = list(self.src, &[("Action", "ListGroups")])
            .await
            .map_err(|e| err("ListGroups", e))?;
        for g in listed {
            let Some(name) = xml::field(&g, "GroupName") else {
                continue;
            };
            let path = xml::field(&g, "Path").unwrap_or_else(|| "/".into());
            let params = [
                ("Action", "CreateGroup"),
                ("GroupName", name.as_str()),
                ("Path", path.as_str()),
            ];
            if self.w.create(format!("group {name}"), &params).await == Ok(true) {
                self.groups.insert(name.clone());
                self.policies_of("Group", &name).await?;
            }
        }
        Ok(())
    }

    async fn users(&mut self) -> Result<(), Error> {
        let listed = list(self.src, &[("Action", "ListUsers")])
            .await
            .map_err(|e| err("ListUsers", e))?;
        for u in listed {
            let Some(name) = xml::field(&u, "UserName") else {
                continue;
            };
            let path = xml::field(&u, "Path").unwrap_or_else(|| "/".into());
            let tags = self.tags_of("User", &name).await;
            let mut params = vec![
                ("Action", "CreateUser"),
                ("UserName", name.as_str()),
                ("Path", path.as_str()),
            ];
            params.extend(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            if self.w.create(format!("user {name}"), &params).await != Ok(true) {
                continue;
            }
            self.policies_of("User", &name).await?;
            let groups = list(
                self.src,
                &[("Action", "ListGroupsForUser"), ("UserName", &name)],
            )
            .await
            .map_err(|e| err("ListGroupsForUser", e))?;
            for g in groups {
                let Some(group) = xml::field(&g, "GroupName") else {
                    continue;
                };
                if !self.groups.contains(&group) {
                    self.w.fail(
                        format!("user {name}: member of {group}"),
                        "that group was not created by this run; add the user by hand",
                    );
                    continue;
                }
                self.w
                    .link(
                        format!("user {name}: member of {group}"),
                        &[
                            ("Action", "AddUserToGroup"),
                            ("UserName", &name),
                            ("GroupName", &group),
                        ],
                    )
                    .await;
            }
            let keys = list(
                self.src,
                &[("Action", "ListAccessKeys"), ("UserName", &name)],
            )
            .await
            .map_err(|e| err("ListAccessKeys", e))?;
            if !keys.is_empty() {
                self.w
                    .out
                    .keys_not_copied
                    .push(format!("{name}: {} access key(s)", keys.len()));
            }
            match list(
                self.src,
                &[("Action", "ListMFADevices"), ("UserName", &name)],
            )
            .await
            {
                Ok(devices) if !devices.is_empty() => self
                    .w
                    .out
                    .mfa_not_copied
                    .push(format!("{name}: {} MFA device(s)", devices.len())),
                Ok(_) => {}
                Err(e) => self.w.fail(format!("user {name}: MFA devices"), e),
            }
        }
        Ok(())
    }
}

/// Copies identities from `src` (another region's IAM) into `dst` (this region's). Errors
/// that stop the whole copy (the source cannot be listed) are returned; an identity that
/// fails is a failure in the summary.
pub async fn copy_iam(src: &S3Client, dst: &S3Client, dry_run: bool) -> Result<IamSummary, Error> {
    let mut iam = Iam {
        src,
        w: Writer::new(dst, dry_run),
        arns: HashMap::new(),
        groups: Default::default(),
        account: None,
    };
    iam.policies().await?;
    iam.groups().await?;
    iam.roles().await?;
    iam.users().await?;
    Ok(iam.w.finish())
}

/// A source role's trust policy as it must read here: the source's account id becomes this
/// region's. Any other twelve-digit account id is refused (returned as the error).
fn trust_here(doc: &str, source: &str, here: &str) -> Result<String, String> {
    let out = if source.is_empty() {
        doc.to_owned()
    } else {
        doc.replace(source, here)
    };
    let b = out.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let run = &out[start..i];
            // An account id stands alone: twelve digits, not part of a longer number or
            // a condition's value glued to letters.
            let alone = |c: Option<&u8>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
            if run.len() == 12
                && run != here
                && alone(start.checked_sub(1).and_then(|j| b.get(j)))
                && alone(b.get(i))
            {
                return Err(run.to_owned());
            }
        } else {
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::trust_here;

    #[test]
    fn a_trust_policy_names_this_account_or_is_refused() {
        let doc = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111111111111:user/ana"},"Action":"sts:AssumeRole"}]}"#;
        let here = trust_here(doc, "111111111111", "222222222222").unwrap();
        assert!(
            here.contains("arn:aws:iam::222222222222:user/ana"),
            "{here}"
        );
        assert!(!here.contains("111111111111"));
        let other = doc.replace("111111111111", "333333333333");
        assert_eq!(
            trust_here(&other, "111111111111", "222222222222"),
            Err("333333333333".into())
        );
        // Services and longer numbers are not accounts.
        let service = r#"{"Principal":{"Service":"lambda.amazonaws.com"},"Condition":{"NumericLessThan":{"x":"1234567890123"}}}"#;
        assert!(trust_here(service, "111111111111", "222222222222").is_ok());
    }
}
