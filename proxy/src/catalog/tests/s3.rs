//! config/catalog/s3.yaml — both addressing styles, the `when` variants.

use super::super::RiskClass::*;
use super::{check_table, shipped, Row};

const P: &str = "s3.amazonaws.com";
const PR: &str = "s3.eu-west-1.amazonaws.com";
const V: &str = "logs.s3.amazonaws.com";
const VR: &str = "logs.s3.eu-west-1.amazonaws.com";
const B: &str = "s3/buckets/logs";
const K: &str = "s3/buckets/logs/2024/01/app.log";
const COPY: &[&str] = &["x-amz-copy-source"];

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // ListBuckets exists only on the path-style service endpoint.
    ("GET", P, "/", &[], "s3:ListBuckets", Read, "s3", "internal"),
    ("GET", PR, "/", &[], "s3:ListBuckets", Read, "s3", "internal"),

    // --- path style ---
    ("GET", P, "/logs?list-type=2&prefix=2024/", &[], "s3:ListObjectsV2", Read, B, "internal"),
    ("GET", P, "/logs/?list-type=2", &[], "s3:ListObjectsV2", Read, B, "internal"),
    ("GET", P, "/logs", &[], "s3:ListObjects", Read, B, "internal"),
    ("GET", PR, "/logs?uploads", &[], "s3:ListMultipartUploads", Read, B, "internal"),
    ("HEAD", P, "/logs", &[], "s3:HeadBucket", Read, B, "internal"),
    ("PUT", P, "/logs", &[], "s3:CreateBucket", Write, B, "internal"),
    ("DELETE", P, "/logs", &[], "s3:DeleteBucket", ProdChange, B, "internal"),
    ("GET", P, "/logs?policy", &[], "s3:GetBucketPolicy", Read, B, "internal"),
    ("PUT", P, "/logs?policy", &[], "s3:PutBucketPolicy", ProdChange, B, "internal"),
    ("PUT", P, "/logs?policy=", &[], "s3:PutBucketPolicy", ProdChange, B, "internal"),
    ("DELETE", P, "/logs?policy", &[], "s3:DeleteBucketPolicy", ProdChange, B, "internal"),
    ("PUT", P, "/logs?publicAccessBlock", &[], "s3:PutPublicAccessBlock", ProdChange, B, "internal"),
    ("PUT", P, "/logs?versioning", &[], "s3:PutBucketVersioning", ProdChange, B, "internal"),
    ("POST", P, "/logs?delete", &[], "s3:DeleteObjects", Write, B, "internal"),
    ("GET", P, "/logs/2024/01/app.log", &[], "s3:GetObject", DataExport, K, "internal"),
    ("GET", P, "/logs/2024/01/app.log?x-id=GetObject", &[], "s3:GetObject", DataExport, K, "internal"),
    ("HEAD", P, "/logs/2024/01/app.log", &[], "s3:HeadObject", Read, K, "internal"),
    ("PUT", P, "/logs/2024/01/app.log", &[], "s3:PutObject", Write, K, "internal"),
    ("PUT", P, "/logs/2024/01/app.log", COPY, "s3:CopyObject", Write, K, "internal"),
    ("DELETE", P, "/logs/2024/01/app.log", &[], "s3:DeleteObject", Write, K, "internal"),
    ("POST", P, "/logs/2024/01/app.log?uploads", &[], "s3:CreateMultipartUpload", Write, K, "internal"),
    ("PUT", P, "/logs/2024/01/app.log?partNumber=1&uploadId=u1", &[], "s3:UploadPart", Write, K, "internal"),
    ("PUT", P, "/logs/2024/01/app.log?uploadId=u1&partNumber=2", COPY, "s3:UploadPartCopy", Write, K, "internal"),
    ("POST", P, "/logs/2024/01/app.log?uploadId=u1", &[], "s3:CompleteMultipartUpload", Write, K, "internal"),
    ("DELETE", P, "/logs/2024/01/app.log?uploadId=u1", &[], "s3:AbortMultipartUpload", Write, K, "internal"),
    ("GET", P, "/logs/2024/01/app.log?uploadId=u1", &[], "s3:ListParts", Read, K, "internal"),
    ("PUT", P, "/logs/2024/01/app.log?acl", &[], "s3:PutObjectAcl", ProdChange, K, "internal"),
    // Keys stay as sent: percent-encoded, never decoded into extra segments.
    ("GET", P, "/logs/a%2Fb%20c.txt", &[], "s3:GetObject", DataExport, "s3/buckets/logs/a%2Fb%20c.txt", "internal"),
    // Only `partNumber` without `uploadId` is not an UploadPart: plain PutObject.
    ("PUT", P, "/logs/k?partNumber=1", &[], "s3:PutObject", Write, "s3/buckets/logs/k", "internal"),
    // Region captured by the host but not used in the resource.
    ("GET", "s3.dualstack.us-east-2.amazonaws.com", "/logs/k", &[], "s3:GetObject", DataExport, "s3/buckets/logs/k", "internal"),

    // --- virtual-hosted style: the bucket comes from the host ---
    ("GET", V, "/?list-type=2", &[], "s3:ListObjectsV2", Read, B, "internal"),
    ("GET", VR, "/?list-type=2", &[], "s3:ListObjectsV2", Read, B, "internal"),
    ("GET", V, "/", &[], "s3:ListObjects", Read, B, "internal"),
    ("GET", V, "", &[], "s3:ListObjects", Read, B, "internal"),
    ("HEAD", V, "/", &[], "s3:HeadBucket", Read, B, "internal"),
    ("DELETE", VR, "/", &[], "s3:DeleteBucket", ProdChange, B, "internal"),
    ("PUT", V, "/?policy", &[], "s3:PutBucketPolicy", ProdChange, B, "internal"),
    ("GET", V, "/?policy", &[], "s3:GetBucketPolicy", Read, B, "internal"),
    ("GET", VR, "/2024/01/app.log", &[], "s3:GetObject", DataExport, K, "internal"),
    ("HEAD", V, "/2024/01/app.log", &[], "s3:HeadObject", Read, K, "internal"),
    ("PUT", V, "/2024/01/app.log", &[], "s3:PutObject", Write, K, "internal"),
    ("PUT", VR, "/2024/01/app.log", COPY, "s3:CopyObject", Write, K, "internal"),
    ("PUT", V, "/2024/01/app.log?partNumber=3&uploadId=u1", COPY, "s3:UploadPartCopy", Write, K, "internal"),
    ("POST", V, "/2024/01/app.log?uploads=", &[], "s3:CreateMultipartUpload", Write, K, "internal"),
    ("DELETE", V, "/2024/01/app.log", &[], "s3:DeleteObject", Write, K, "internal"),
    ("GET", "LOGS.S3.AMAZONAWS.COM", "/a", &[], "s3:GetObject", DataExport, "s3/buckets/logs/a", "internal"),
    // A bucket literally named `s3`, and one named like a region label.
    ("GET", "s3.s3.amazonaws.com", "/a", &[], "s3:GetObject", DataExport, "s3/buckets/s3/a", "internal"),
    ("GET", "dualstack.s3.us-east-1.amazonaws.com", "/a", &[], "s3:GetObject", DataExport, "s3/buckets/dualstack/a", "internal"),

    // unknown
    ("PATCH", V, "/a", &[], "s3:unknown", Unknown, "s3", "internal"),
    ("POST", V, "/a", &[], "s3:unknown", Unknown, "s3", "internal"),
    ("GET", V, "/a/../../other/b", &[], "s3:unknown", Unknown, "s3", "internal"),
];

#[test]
fn s3_table() {
    check_table(shipped(), ROWS);
}
