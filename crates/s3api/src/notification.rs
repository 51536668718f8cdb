//! Put/GetBucketNotificationConfiguration. Queue and topic configurations name a webhook target
//! configured on the server by the last `:` segment of their ARN; Lambda configurations wait
//! for Function Compute.

use feiyun_oss::events::{NotificationConfig, NotificationRule};
use feiyun_oss::{BlobStore, MetaStore, OssError};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use crate::{FeiyunS3, fail};

fn rule_in(
    id: &Option<String>,
    arn: &str,
    events: &[Event],
    filter: &Option<NotificationConfigurationFilter>,
    n: usize,
) -> Result<NotificationRule, OssError> {
    let target = arn.rsplit(':').next().unwrap_or_default().to_owned();
    let mut rule = NotificationRule {
        id: id
            .clone()
            .unwrap_or_else(|| format!("notification-{}", n + 1)),
        arn: arn.to_owned(),
        target,
        events: events.iter().map(|e| e.as_ref().to_owned()).collect(),
        ..Default::default()
    };
    let rules = filter
        .as_ref()
        .and_then(|f| f.key.as_ref())
        .and_then(|k| k.filter_rules.as_ref());
    let (mut seen_prefix, mut seen_suffix) = (false, false);
    for fr in rules.into_iter().flatten() {
        let value = fr.value.clone().unwrap_or_default();
        match fr.name.as_ref().map(|n| n.as_str().to_ascii_lowercase()) {
            Some(n) if n == FilterRuleName::PREFIX && !seen_prefix => {
                seen_prefix = true;
                rule.prefix = value;
            }
            Some(n) if n == FilterRuleName::SUFFIX && !seen_suffix => {
                seen_suffix = true;
                rule.suffix = value;
            }
            _ => {
                return Err(OssError::InvalidArgument(
                    "filter rule names must be prefix or suffix, each at most once".into(),
                ));
            }
        }
    }
    Ok(rule)
}

fn filter_out(r: &NotificationRule) -> Option<NotificationConfigurationFilter> {
    let mut rules = Vec::new();
    if !r.prefix.is_empty() {
        rules.push(FilterRule {
            name: Some(FilterRuleName::from_static(FilterRuleName::PREFIX)),
            value: Some(r.prefix.clone()),
        });
    }
    if !r.suffix.is_empty() {
        rules.push(FilterRule {
            name: Some(FilterRuleName::from_static(FilterRuleName::SUFFIX)),
            value: Some(r.suffix.clone()),
        });
    }
    if rules.is_empty() {
        return None;
    }
    Some(NotificationConfigurationFilter {
        key: Some(S3KeyFilter {
            filter_rules: Some(rules),
        }),
    })
}

impl<M: MetaStore, B: BlobStore> FeiyunS3<M, B> {
    pub(crate) async fn op_put_bucket_notification_configuration(
        &self,
        req: S3Request<PutBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketNotificationConfigurationOutput>> {
        let i = &req.input;
        let c = &i.notification_configuration;
        if c.lambda_function_configurations
            .as_ref()
            .is_some_and(|l| !l.is_empty())
        {
            return Err(fail(&req)(OssError::NotImplemented(
                "Lambda function destinations arrive with Function Compute".into(),
            )));
        }
        let mut rules = Vec::new();
        for q in c.queue_configurations.iter().flatten() {
            rules.push(
                rule_in(&q.id, &q.queue_arn, &q.events, &q.filter, rules.len())
                    .map_err(fail(&req))?,
            );
        }
        for t in c.topic_configurations.iter().flatten() {
            rules.push(
                rule_in(&t.id, &t.topic_arn, &t.events, &t.filter, rules.len())
                    .map_err(fail(&req))?,
            );
        }
        self.oss
            .put_notification(
                &i.bucket,
                NotificationConfig { rules },
                &self.webhook_targets,
            )
            .await
            .map_err(fail(&req))?;
        Ok(S3Response::new(
            PutBucketNotificationConfigurationOutput::default(),
        ))
    }

    pub(crate) async fn op_get_bucket_notification_configuration(
        &self,
        req: S3Request<GetBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketNotificationConfigurationOutput>> {
        let cfg = self
            .oss
            .notification(&req.input.bucket)
            .await
            .map_err(fail(&req))?;
        let queues: Vec<QueueConfiguration> = cfg
            .rules
            .iter()
            .map(|r| QueueConfiguration {
                id: Some(r.id.clone()),
                queue_arn: r.arn.clone(),
                events: r.events.iter().map(|e| Event::from(e.clone())).collect(),
                filter: filter_out(r),
            })
            .collect();
        Ok(S3Response::new(GetBucketNotificationConfigurationOutput {
            queue_configurations: (!queues.is_empty()).then_some(queues),
            ..Default::default()
        }))
    }
}
