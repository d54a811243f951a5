"""An agent as its developer writes one: a vendor SDK, pointed at tollgate
by HTTPS_PROXY and trusting tollgate's CA, holding a task token (or, for
AWS, keys of its own) and nothing else. tests/tests/sdks.rs runs it with
one scenario name and reads the one JSON line it prints.

Loopback only: `loopback_only` stops the process (exit 3) the moment
anything looks up a name or connects anywhere but loopback.
"""

import json
import os
import sys

import loopback_only  # noqa: F401  (installs the guard; tests/py/loopback_only.py)


def refusal(err):
    """What an SDK's error says about a refused call: its text, and the
    answer's body as the SDK parsed it."""
    return {"status": err.status_code, "message": str(err), "body": err.body}


def openai_calls():
    import openai

    client = openai.OpenAI(max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    out = {"id": reply.id, "content": reply.choices[0].message.content}
    try:
        client.models.delete("ft:gpt-4o-mini:acme::abc")
        out["denied"] = None
    except openai.APIStatusError as err:
        out["denied"] = refusal(err)
    return out


def anthropic_calls():
    import anthropic

    client = anthropic.Anthropic(max_retries=0)
    reply = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "hello"}],
    )
    out = {"id": reply.id, "content": reply.content[0].text}
    try:
        client.models.retrieve("claude-sonnet-4-5")
        out["denied"] = None
    except anthropic.APIStatusError as err:
        out["denied"] = refusal(err)
    return out


def s3_calls():
    import boto3
    import botocore.exceptions
    import requests

    s3 = boto3.client("s3", region_name="us-west-2")
    got = s3.get_object(Bucket="acme-data", Key="report.csv")
    out = {"body": got["Body"].read().decode()}
    try:
        s3.delete_object(Bucket="acme-data", Key="report.csv")
        out["denied"] = None
    except botocore.exceptions.ClientError as err:
        meta = err.response["ResponseMetadata"]
        out["denied"] = {
            "status": meta["HTTPStatusCode"],
            "message": str(err),
            "request_id": meta.get("RequestId"),
        }
    # A presigned URL, fetched as an agent would hand it to any client.
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "acme-data", "Key": "report.csv"}, ExpiresIn=300
    )
    presigned = requests.get(url, verify=os.environ["AWS_CA_BUNDLE"], timeout=10)
    out["presigned"] = {
        "params": [pair.split("=")[0] for pair in url.split("?", 1)[1].split("&")],
        "status": presigned.status_code,
        "body": presigned.text,
    }
    return out


SCENARIOS = {"openai": openai_calls, "anthropic": anthropic_calls, "s3": s3_calls}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]]()))
