//! IAM actions: parameters in, one `Iam` call, XML out. Each action is authorized as
//! `iam:ACTION` on the ARN of the entity it touches.

use feiyun_iam::model::{
    self, AccessKeyRecord, GroupRecord, KeyStatus, RoleRecord, Tag, UserRecord,
};
use feiyun_iam::store::ManagedPolicyView;
use feiyun_iam::{EntityKind, Iam};
use feiyun_meta::MetaStore;
use http::StatusCode;

use crate::xml::Xml;
use crate::{ApiError, Ctx, page, truncation};

pub(crate) async fn run<M: MetaStore>(
    iam: &Iam<M>,
    action: &str,
    cx: &Ctx<'_>,
) -> Result<Xml, ApiError> {
    let p = cx.params;
    let acct = cx.account.as_str();
    let st = iam.snapshot();
    let mut x = Xml::default();
    // The ARN an action on a named user/group/role/policy is authorized against; for an
    // entity that does not exist yet, its default path.
    let user_arn = |name: &str| {
        let path = st
            .user(acct, name)
            .map(|u| u.path.clone())
            .unwrap_or_else(|_| "/".into());
        model::user_arn(acct, &path, name)
    };
    let group_arn = |name: &str| {
        let path = st
            .group(acct, name)
            .map(|g| g.path.clone())
            .unwrap_or_else(|_| "/".into());
        model::group_arn(acct, &path, name)
    };
    let role_arn = |name: &str| {
        let path = st
            .role(acct, name)
            .map(|r| r.path.clone())
            .unwrap_or_else(|_| "/".into());
        model::role_arn(acct, &path, name)
    };
    // Key operations default to the caller's own user when UserName is absent.
    let key_owner = || -> Result<String, ApiError> {
        match (p.get("UserName"), &cx.caller.username) {
            (Some(u), _) => Ok(u.to_owned()),
            (None, Some(u)) => Ok(u.clone()),
            (None, None) => Err(ApiError::validation(
                "The root identity's access key lives in the credential file; name a UserName",
            )),
        }
    };
    match action {
        "CreateUser" => {
            let name = p.required("UserName")?;
            // The ARN the new user will have: its requested path, not `/`.
            let arn = model::user_arn(acct, p.get("Path").unwrap_or("/"), name);
            cx.authorize("iam:CreateUser", &arn)?;
            let tags = p.tags();
            if !tags.is_empty() {
                cx.authorize("iam:TagUser", &arn)?;
            }
            let u = iam.create_user(acct, name, p.get("Path"), tags).await?;
            x.open("User");
            user(&mut x, acct, &u);
            x.close("User");
        }
        "GetUser" => {
            match p
                .get("UserName")
                .map(str::to_owned)
                .or_else(|| cx.caller.username.clone())
            {
                Some(name) => {
                    cx.authorize("iam:GetUser", &user_arn(&name))?;
                    let u = st.user(acct, &name)?;
                    x.open("User");
                    user(&mut x, acct, u);
                    x.close("User");
                }
                None => {
                    // The root identity asking about itself.
                    x.open("User")
                        .leaf("UserId", acct)
                        .leaf("Arn", &cx.caller.principal.arn)
                        .date("CreateDate", st.accounts.get(acct).map_or(0, |a| a.created))
                        .close("User");
                }
            }
        }
        "ListUsers" => {
            cx.authorize("iam:ListUsers", &format!("arn:aws:iam::{acct}:user/*"))?;
            let prefix = p.get("PathPrefix").unwrap_or("/");
            let all: Vec<&UserRecord> = st
                .users
                .iter()
                .filter(|((a, _), u)| a == acct && u.path.starts_with(prefix))
                .map(|(_, u)| u)
                .collect();
            let (items, next) = page(
                all,
                |u| u.name.to_lowercase(),
                p.get("Marker"),
                p.max_items()?,
            );
            x.open("Users");
            for u in items {
                x.open("member");
                user(&mut x, acct, u);
                x.close("member");
            }
            x.close("Users");
            truncation(&mut x, next);
        }
        "DeleteUser" => {
            let name = p.required("UserName")?;
            cx.authorize("iam:DeleteUser", &user_arn(name))?;
            iam.delete_user(acct, name).await?;
        }
        "TagUser" => {
            let name = p.required("UserName")?;
            cx.authorize("iam:TagUser", &user_arn(name))?;
            iam.tag_user(acct, name, p.tags()).await?;
        }
        "UntagUser" => {
            let name = p.required("UserName")?;
            cx.authorize("iam:UntagUser", &user_arn(name))?;
            let keys: Vec<String> = p
                .members("TagKeys")
                .into_iter()
                .map(str::to_owned)
                .collect();
            iam.untag_user(acct, name, &keys).await?;
        }
        "ListUserTags" => {
            let name = p.required("UserName")?;
            cx.authorize("iam:ListUserTags", &user_arn(name))?;
            tags(&mut x, &st.user(acct, name)?.tags);
            x.leaf("IsTruncated", "false");
        }
        "CreateAccessKey" => {
            let name = key_owner()?;
            cx.authorize("iam:CreateAccessKey", &user_arn(&name))?;
            let k = iam.create_access_key(acct, &name).await?;
            x.open("AccessKey");
            key_meta(&mut x, &k);
            x.leaf("SecretAccessKey", &k.secret).close("AccessKey");
        }
        // A Feiyun extension, for migrations: a key whose id and secret were issued
        // elsewhere. Only the account's root may choose a secret for a user.
        "ImportAccessKey" => {
            let name = p.required("UserName")?;
            if !cx.caller.principal.is_root {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "AccessDenied",
                    "ImportAccessKey is for the account's root user only",
                ));
            }
            cx.authorize("iam:ImportAccessKey", &user_arn(name))?;
            let status = match p.get("Status").unwrap_or("Active") {
                "Active" => KeyStatus::Active,
                "Inactive" => KeyStatus::Inactive,
                other => {
                    return Err(ApiError::validation(format!(
                        "Invalid status {other}: must be Active or Inactive"
                    )));
                }
            };
            let k = iam
                .import_access_key(
                    acct,
                    name,
                    p.required("AccessKeyId")?,
                    p.required("SecretAccessKey")?,
                    status,
                )
                .await?;
            x.open("AccessKey");
            key_meta(&mut x, &k);
            x.close("AccessKey");
        }
        "ListAccessKeys" => {
            let name = key_owner()?;
            cx.authorize("iam:ListAccessKeys", &user_arn(&name))?;
            let keys = iam.list_access_keys(acct, &name)?;
            x.leaf("UserName", &st.user(acct, &name)?.name)
                .open("AccessKeyMetadata");
            for k in &keys {
                x.open("member");
                key_meta(&mut x, k);
                x.close("member");
            }
            x.close("AccessKeyMetadata").leaf("IsTruncated", "false");
        }
        "UpdateAccessKey" => {
            let name = key_owner()?;
            cx.authorize("iam:UpdateAccessKey", &user_arn(&name))?;
            let status = match p.required("Status")? {
                "Active" => KeyStatus::Active,
                "Inactive" => KeyStatus::Inactive,
                other => {
                    return Err(ApiError::validation(format!(
                        "Invalid status {other}: must be Active or Inactive"
                    )));
                }
            };
            iam.update_access_key(acct, Some(&name), p.required("AccessKeyId")?, status)
                .await?;
        }
        "DeleteAccessKey" => {
            let name = key_owner()?;
            cx.authorize("iam:DeleteAccessKey", &user_arn(&name))?;
            iam.delete_access_key(acct, Some(&name), p.required("AccessKeyId")?)
                .await?;
        }
        "GetAccessKeyLastUsed" => {
            let id = p.required("AccessKeyId")?;
            let k = st
                .keys
                .get(id)
                .filter(|k| k.account == acct)
                .ok_or_else(|| {
                    ApiError::from(feiyun_iam::IamError::NoSuchEntity(format!(
                        "The Access Key with id {id} cannot be found."
                    )))
                })?;
            cx.authorize("iam:GetAccessKeyLastUsed", &user_arn(&k.user))?;
            x.leaf("UserName", &k.user)
                .open("AccessKeyLastUsed")
                .leaf("ServiceName", "N/A")
                .leaf("Region", "N/A")
                .close("AccessKeyLastUsed");
        }
        "CreateGroup" => {
            let name = p.required("GroupName")?;
            let arn = model::group_arn(acct, p.get("Path").unwrap_or("/"), name);
            cx.authorize("iam:CreateGroup", &arn)?;
            let g = iam.create_group(acct, name, p.get("Path")).await?;
            x.open("Group");
            group(&mut x, acct, &g);
            x.close("Group");
        }
        "GetGroup" => {
            let name = p.required("GroupName")?;
            cx.authorize("iam:GetGroup", &group_arn(name))?;
            let g = st.group(acct, name)?;
            x.open("Group");
            group(&mut x, acct, g);
            x.close("Group").open("Users");
            for u in st.group_members(acct, name) {
                x.open("member");
                user(&mut x, acct, u);
                x.close("member");
            }
            x.close("Users").leaf("IsTruncated", "false");
        }
        "ListGroups" => {
            cx.authorize("iam:ListGroups", &format!("arn:aws:iam::{acct}:group/*"))?;
            let prefix = p.get("PathPrefix").unwrap_or("/");
            let all: Vec<&GroupRecord> = st
                .groups
                .iter()
                .filter(|((a, _), g)| a == acct && g.path.starts_with(prefix))
                .map(|(_, g)| g)
                .collect();
            let (items, next) = page(
                all,
                |g| g.name.to_lowercase(),
                p.get("Marker"),
                p.max_items()?,
            );
            x.open("Groups");
            for g in items {
                x.open("member");
                group(&mut x, acct, g);
                x.close("member");
            }
            x.close("Groups");
            truncation(&mut x, next);
        }
        "ListGroupsForUser" => {
            let name = p.required("UserName")?;
            cx.authorize("iam:ListGroupsForUser", &user_arn(name))?;
            let u = st.user(acct, name)?;
            x.open("Groups");
            for g in u.groups.iter().filter_map(|g| st.group(acct, g).ok()) {
                x.open("member");
                group(&mut x, acct, g);
                x.close("member");
            }
            x.close("Groups").leaf("IsTruncated", "false");
        }
        "DeleteGroup" => {
            let name = p.required("GroupName")?;
            cx.authorize("iam:DeleteGroup", &group_arn(name))?;
            iam.delete_group(acct, name).await?;
        }
        "AddUserToGroup" => {
            let name = p.required("GroupName")?;
            cx.authorize("iam:AddUserToGroup", &group_arn(name))?;
            iam.add_user_to_group(acct, name, p.required("UserName")?)
                .await?;
        }
        "RemoveUserFromGroup" => {
            let name = p.required("GroupName")?;
            cx.authorize("iam:RemoveUserFromGroup", &group_arn(name))?;
            iam.remove_user_from_group(acct, name, p.required("UserName")?)
                .await?;
        }
        "CreateRole" => {
            let name = p.required("RoleName")?;
            let arn = model::role_arn(acct, p.get("Path").unwrap_or("/"), name);
            cx.authorize("iam:CreateRole", &arn)?;
            if !p.tags().is_empty() {
                cx.authorize("iam:TagRole", &arn)?;
            }
            let max = match p.get("MaxSessionDuration") {
                Some(v) => Some(
                    v.parse::<u32>()
                        .map_err(|_| ApiError::validation("MaxSessionDuration must be a number"))?,
                ),
                None => None,
            };
            let r = iam
                .create_role(
                    acct,
                    feiyun_iam::store::NewRole {
                        name,
                        path: p.get("Path"),
                        trust_policy: p.required("AssumeRolePolicyDocument")?,
                        description: p.get("Description").map(str::to_owned),
                        max_session_secs: max,
                        tags: p.tags(),
                    },
                )
                .await?;
            x.open("Role");
            role(&mut x, acct, &r);
            x.close("Role");
        }
        "GetRole" => {
            let name = p.required("RoleName")?;
            cx.authorize("iam:GetRole", &role_arn(name))?;
            x.open("Role");
            role(&mut x, acct, st.role(acct, name)?);
            x.close("Role");
        }
        "ListRoles" => {
            cx.authorize("iam:ListRoles", &format!("arn:aws:iam::{acct}:role/*"))?;
            let prefix = p.get("PathPrefix").unwrap_or("/");
            let all: Vec<&RoleRecord> = st
                .roles
                .iter()
                .filter(|((a, _), r)| a == acct && r.path.starts_with(prefix))
                .map(|(_, r)| r)
                .collect();
            let (items, next) = page(
                all,
                |r| r.name.to_lowercase(),
                p.get("Marker"),
                p.max_items()?,
            );
            x.open("Roles");
            for r in items {
                x.open("member");
                role(&mut x, acct, r);
                x.close("member");
            }
            x.close("Roles");
            truncation(&mut x, next);
        }
        "DeleteRole" => {
            let name = p.required("RoleName")?;
            cx.authorize("iam:DeleteRole", &role_arn(name))?;
            iam.delete_role(acct, name).await?;
        }
        "UpdateAssumeRolePolicy" => {
            let name = p.required("RoleName")?;
            cx.authorize("iam:UpdateAssumeRolePolicy", &role_arn(name))?;
            iam.update_trust_policy(acct, name, p.required("PolicyDocument")?)
                .await?;
        }
        "TagRole" => {
            let name = p.required("RoleName")?;
            cx.authorize("iam:TagRole", &role_arn(name))?;
            iam.tag_role(acct, name, p.tags()).await?;
        }
        "UntagRole" => {
            let name = p.required("RoleName")?;
            cx.authorize("iam:UntagRole", &role_arn(name))?;
            let keys: Vec<String> = p
                .members("TagKeys")
                .into_iter()
                .map(str::to_owned)
                .collect();
            iam.untag_role(acct, name, &keys).await?;
        }
        "ListRoleTags" => {
            let name = p.required("RoleName")?;
            cx.authorize("iam:ListRoleTags", &role_arn(name))?;
            tags(&mut x, &st.role(acct, name)?.tags);
            x.leaf("IsTruncated", "false");
        }
        "PutUserPolicy" | "PutGroupPolicy" | "PutRolePolicy" => {
            let (kind, entity, arn) = entity_of(action, p, &user_arn, &group_arn, &role_arn)?;
            cx.authorize(&format!("iam:{action}"), &arn)?;
            iam.put_inline_policy(
                acct,
                kind,
                &entity,
                p.required("PolicyName")?,
                p.required("PolicyDocument")?,
            )
            .await?;
        }
        "GetUserPolicy" | "GetGroupPolicy" | "GetRolePolicy" => {
            let (kind, entity, arn) = entity_of(action, p, &user_arn, &group_arn, &role_arn)?;
            cx.authorize(&format!("iam:{action}"), &arn)?;
            let name = p.required("PolicyName")?;
            let inline = iam.inline_policies(acct, kind, &entity)?;
            let doc = inline.get(name).ok_or_else(|| {
                ApiError::from(feiyun_iam::IamError::NoSuchEntity(format!(
                    "The {} policy with name {name} cannot be found.",
                    kind.label()
                )))
            })?;
            x.leaf(entity_field(kind), &entity)
                .leaf("PolicyName", name)
                .leaf("PolicyDocument", &url_encode(doc));
        }
        "DeleteUserPolicy" | "DeleteGroupPolicy" | "DeleteRolePolicy" => {
            let (kind, entity, arn) = entity_of(action, p, &user_arn, &group_arn, &role_arn)?;
            cx.authorize(&format!("iam:{action}"), &arn)?;
            iam.delete_inline_policy(acct, kind, &entity, p.required("PolicyName")?)
                .await?;
        }
        "ListUserPolicies" | "ListGroupPolicies" | "ListRolePolicies" => {
            let (kind, entity, arn) = entity_of(action, p, &user_arn, &group_arn, &role_arn)?;
            cx.authorize(&format!("iam:{action}"), &arn)?;
            x.open("PolicyNames");
            for name in iam.inline_policies(acct, kind, &entity)?.keys() {
                x.leaf("member", name);
            }
            x.close("PolicyNames").leaf("IsTruncated", "false");
        }
        "CreatePolicy" => {
            let name = p.required("PolicyName")?;
            let path = p.get("Path").unwrap_or("/");
            cx.authorize("iam:CreatePolicy", &model::policy_arn(acct, path, name))?;
            let v = iam
                .create_policy(
                    acct,
                    name,
                    Some(path),
                    p.required("PolicyDocument")?,
                    p.get("Description").map(str::to_owned),
                )
                .await?;
            x.open("Policy");
            policy(&mut x, &v, 0);
            x.close("Policy");
        }
        "GetPolicy" => {
            let arn = p.required("PolicyArn")?;
            cx.authorize("iam:GetPolicy", arn)?;
            let v = st.managed_policy(arn).ok_or_else(|| no_policy(arn))?;
            x.open("Policy");
            policy(&mut x, &v, st.attachment_count(arn));
            x.close("Policy");
        }
        "GetPolicyVersion" => {
            let arn = p.required("PolicyArn")?;
            cx.authorize("iam:GetPolicyVersion", arn)?;
            let v = st.managed_policy(arn).ok_or_else(|| no_policy(arn))?;
            if p.required("VersionId")? != "v1" {
                return Err(ApiError::from(feiyun_iam::IamError::NoSuchEntity(format!(
                    "Policy {arn} version {} does not exist or is not attachable.",
                    p.required("VersionId")?
                ))));
            }
            x.open("PolicyVersion")
                .leaf("Document", &url_encode(&v.document))
                .leaf("VersionId", "v1")
                .leaf("IsDefaultVersion", "true")
                .date("CreateDate", v.created)
                .close("PolicyVersion");
        }
        "ListPolicies" => {
            cx.authorize("iam:ListPolicies", &format!("arn:aws:iam::{acct}:policy/*"))?;
            let scope = p.get("Scope").unwrap_or("All");
            let only_attached = p.get("OnlyAttached") == Some("true");
            let mut all: Vec<ManagedPolicyView> = Vec::new();
            if scope != "Local" {
                all.extend(
                    [
                        "AdministratorAccess",
                        "AmazonS3FullAccess",
                        "AmazonS3ReadOnlyAccess",
                        "IAMFullAccess",
                        "IAMReadOnlyAccess",
                    ]
                    .iter()
                    .filter_map(|n| st.managed_policy(&format!("arn:aws:iam::aws:policy/{n}"))),
                );
            }
            if scope != "AWS" {
                all.extend(
                    st.policies
                        .iter()
                        .filter(|((a, _), _)| a == acct)
                        .filter_map(|(_, r)| {
                            st.managed_policy(&model::policy_arn(acct, &r.path, &r.name))
                        }),
                );
            }
            let counted: Vec<(ManagedPolicyView, usize)> = all
                .into_iter()
                .map(|v| {
                    let n = st.attachment_count(&v.arn);
                    (v, n)
                })
                .filter(|(_, n)| !only_attached || *n > 0)
                .collect();
            let refs: Vec<&(ManagedPolicyView, usize)> = counted.iter().collect();
            let (items, next) = page(
                refs,
                |(v, _)| v.arn.clone(),
                p.get("Marker"),
                p.max_items()?,
            );
            x.open("Policies");
            for (v, n) in items {
                x.open("member");
                policy(&mut x, v, *n);
                x.close("member");
            }
            x.close("Policies");
            truncation(&mut x, next);
        }
        "DeletePolicy" => {
            let arn = p.required("PolicyArn")?;
            cx.authorize("iam:DeletePolicy", arn)?;
            iam.delete_policy(acct, arn).await?;
        }
        "AttachUserPolicy" | "AttachGroupPolicy" | "AttachRolePolicy" => {
            let (kind, entity, arn) = entity_of(action, p, &user_arn, &group_arn, &role_arn)?;
            cx.authorize(&format!("iam:{action}"), &arn)?;
            iam.attach_policy(acct, kind, &entity, p.required("PolicyArn")?)
                .await?;
        }
        "DetachUserPolicy" | "DetachGroupPolicy" | "DetachRolePolicy" => {
            let (kind, entity, arn) = entity_of(action, p, &user_arn, &group_arn, &role_arn)?;
            cx.authorize(&format!("iam:{action}"), &arn)?;
            iam.detach_policy(acct, kind, &entity, p.required("PolicyArn")?)
                .await?;
        }
        "ListAttachedUserPolicies" | "ListAttachedGroupPolicies" | "ListAttachedRolePolicies" => {
            let (kind, entity, arn) = entity_of(action, p, &user_arn, &group_arn, &role_arn)?;
            cx.authorize(&format!("iam:{action}"), &arn)?;
            x.open("AttachedPolicies");
            for a in iam.attached_policies(acct, kind, &entity)? {
                let name = a.rsplit('/').next().unwrap_or(&a).to_owned();
                x.open("member")
                    .leaf("PolicyName", &name)
                    .leaf("PolicyArn", &a)
                    .close("member");
            }
            x.close("AttachedPolicies").leaf("IsTruncated", "false");
        }
        "CreateVirtualMFADevice" => {
            let name = p.required("VirtualMFADeviceName")?;
            let path = p.get("Path").unwrap_or("/");
            cx.authorize(
                "iam:CreateVirtualMFADevice",
                &format!("arn:aws:iam::{acct}:mfa{path}{name}"),
            )?;
            let d = iam.create_virtual_mfa(acct, name, Some(path)).await?;
            // The CLI base64-decodes this blob and writes the base32 text to --outfile.
            let seed = feiyun_iam::totp::base32(&d.seed);
            x.open("VirtualMFADevice")
                .leaf("SerialNumber", &d.serial())
                .leaf("Base32StringSeed", &base64_encode(seed.as_bytes()))
                .close("VirtualMFADevice");
        }
        "EnableMFADevice" => {
            let name = p.required("UserName")?;
            cx.authorize("iam:EnableMFADevice", &user_arn(name))?;
            iam.enable_mfa(
                acct,
                name,
                p.required("SerialNumber")?,
                p.required("AuthenticationCode1")?,
                p.required("AuthenticationCode2")?,
            )
            .await?;
        }
        "DeactivateMFADevice" => {
            let name = p.required("UserName")?;
            cx.authorize("iam:DeactivateMFADevice", &user_arn(name))?;
            iam.deactivate_mfa(acct, name, p.required("SerialNumber")?)
                .await?;
        }
        "DeleteVirtualMFADevice" => {
            let serial = p.required("SerialNumber")?;
            cx.authorize("iam:DeleteVirtualMFADevice", serial)?;
            iam.delete_virtual_mfa(acct, serial).await?;
        }
        "ListMFADevices" => {
            let name = key_owner()?;
            cx.authorize("iam:ListMFADevices", &user_arn(&name))?;
            x.open("MFADevices");
            for d in st.mfa.values().filter(|d| {
                d.account == acct
                    && d.user
                        .as_deref()
                        .is_some_and(|u| u.eq_ignore_ascii_case(&name))
            }) {
                x.open("member")
                    .leaf("UserName", d.user.as_deref().unwrap_or_default())
                    .leaf("SerialNumber", &d.serial())
                    .date("EnableDate", d.enabled.unwrap_or(d.created))
                    .close("member");
            }
            x.close("MFADevices").leaf("IsTruncated", "false");
        }
        "ListVirtualMFADevices" => {
            cx.authorize(
                "iam:ListVirtualMFADevices",
                &format!("arn:aws:iam::{acct}:mfa/*"),
            )?;
            let status = p.get("AssignmentStatus").unwrap_or("Any");
            x.open("VirtualMFADevices");
            for d in st.mfa.values().filter(|d| {
                d.account == acct
                    && match status {
                        "Assigned" => d.user.is_some(),
                        "Unassigned" => d.user.is_none(),
                        _ => true,
                    }
            }) {
                x.open("member").leaf("SerialNumber", &d.serial());
                if let Some(u) = d.user.as_deref().and_then(|u| st.user(acct, u).ok()) {
                    x.open("User");
                    user(&mut x, acct, u);
                    x.close("User");
                }
                if let Some(e) = d.enabled {
                    x.date("EnableDate", e);
                }
                x.close("member");
            }
            x.close("VirtualMFADevices").leaf("IsTruncated", "false");
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                format!("Could not find operation {action} for version 2010-05-08"),
            ));
        }
    }
    Ok(x)
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn no_policy(arn: &str) -> ApiError {
    ApiError::from(feiyun_iam::IamError::NoSuchEntity(format!(
        "Policy {arn} does not exist or is not attachable."
    )))
}

/// For the `…User…`/`…Group…`/`…Role…` families: which entity, its name and ARN.
fn entity_of(
    action: &str,
    p: &crate::Params,
    user_arn: &dyn Fn(&str) -> String,
    group_arn: &dyn Fn(&str) -> String,
    role_arn: &dyn Fn(&str) -> String,
) -> Result<(EntityKind, String, String), ApiError> {
    if action.contains("User") {
        let n = p.required("UserName")?;
        Ok((EntityKind::User, n.to_owned(), user_arn(n)))
    } else if action.contains("Group") {
        let n = p.required("GroupName")?;
        Ok((EntityKind::Group, n.to_owned(), group_arn(n)))
    } else {
        let n = p.required("RoleName")?;
        Ok((EntityKind::Role, n.to_owned(), role_arn(n)))
    }
}

fn entity_field(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::User => "UserName",
        EntityKind::Group => "GroupName",
        EntityKind::Role => "RoleName",
    }
}

/// IAM returns policy documents URL-encoded (RFC 3986); the CLI and SDKs decode them.
fn url_encode(s: &str) -> String {
    feiyun_iam::sigv4::uri_encode(s)
}

fn user(x: &mut Xml, acct: &str, u: &UserRecord) {
    x.leaf("Path", &u.path)
        .leaf("UserName", &u.name)
        .leaf("UserId", &u.id)
        .leaf("Arn", &model::user_arn(acct, &u.path, &u.name))
        .date("CreateDate", u.created);
    if !u.tags.is_empty() {
        tags(x, &u.tags);
    }
}

fn group(x: &mut Xml, acct: &str, g: &GroupRecord) {
    x.leaf("Path", &g.path)
        .leaf("GroupName", &g.name)
        .leaf("GroupId", &g.id)
        .leaf("Arn", &model::group_arn(acct, &g.path, &g.name))
        .date("CreateDate", g.created);
}

fn role(x: &mut Xml, acct: &str, r: &RoleRecord) {
    x.leaf("Path", &r.path)
        .leaf("RoleName", &r.name)
        .leaf("RoleId", &r.id)
        .leaf("Arn", &model::role_arn(acct, &r.path, &r.name))
        .date("CreateDate", r.created)
        .leaf("AssumeRolePolicyDocument", &url_encode(&r.trust_policy))
        .opt("Description", r.description.as_deref())
        .leaf("MaxSessionDuration", &r.max_session_secs.to_string());
    if !r.tags.is_empty() {
        tags(x, &r.tags);
    }
}

fn policy(x: &mut Xml, v: &ManagedPolicyView, attachments: usize) {
    x.leaf("PolicyName", &v.name)
        .leaf("PolicyId", &v.id)
        .leaf("Arn", &v.arn)
        .leaf("Path", &v.path)
        .leaf("DefaultVersionId", "v1")
        .leaf("AttachmentCount", &attachments.to_string())
        .leaf("PermissionsBoundaryUsageCount", "0")
        .leaf("IsAttachable", "true")
        .opt("Description", v.description.as_deref())
        .date("CreateDate", v.created)
        .date("UpdateDate", v.updated);
}

fn tags(x: &mut Xml, tags: &[Tag]) {
    x.open("Tags");
    for t in tags {
        x.open("member")
            .leaf("Key", &t.key)
            .leaf("Value", &t.value)
            .close("member");
    }
    x.close("Tags");
}

fn key_meta(x: &mut Xml, k: &AccessKeyRecord) {
    x.leaf("UserName", &k.user)
        .leaf("AccessKeyId", &k.access_key)
        .leaf("Status", k.status.as_str())
        .date("CreateDate", k.created);
}
