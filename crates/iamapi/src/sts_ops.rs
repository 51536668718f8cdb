//! STS actions. GetCallerIdentity needs no permission, as in AWS.

use feiyun_iam::Iam;
use feiyun_meta::MetaStore;
use http::StatusCode;

use crate::xml::Xml;
use crate::{ApiError, Ctx};

pub(crate) async fn run<M: MetaStore>(
    _iam: &Iam<M>,
    action: &str,
    cx: &Ctx<'_>,
) -> Result<Xml, ApiError> {
    let mut x = Xml::default();
    match action {
        "GetCallerIdentity" => {
            x.leaf("Arn", &cx.caller.principal.arn)
                .leaf("UserId", &cx.caller.userid)
                .leaf("Account", &cx.caller.principal.account);
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                format!("Could not find operation {action} for version 2011-06-15"),
            ));
        }
    }
    Ok(x)
}
