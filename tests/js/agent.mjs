// A Node.js agent calling an API through tollgate, the ways docs/operations.md
// shows: `https` with an explicit proxy agent (CONNECT), and `fetch` with
// undici's proxy dispatcher; `fetch-bare` is Node 20's global fetch with
// only HTTPS_PROXY set, which does not use it. Run by tests/tests/sdks.rs
// as `node --require ./loopback-only.cjs agent.mjs SCENARIO URL`, with the
// task token in OPENAI_API_KEY; prints one JSON line: the status and the
// parsed body.
import https from "node:https";

import { HttpsProxyAgent } from "https-proxy-agent";
import { EnvHttpProxyAgent, setGlobalDispatcher } from "undici";

const [scenario, url] = process.argv.slice(2);
const headers = {
  authorization: `Bearer ${process.env.OPENAI_API_KEY}`,
  "content-type": "application/json",
};
const body = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hello" }] });

function viaHttps() {
  const agent = new HttpsProxyAgent(process.env.HTTPS_PROXY);
  return new Promise((resolve, reject) => {
    const request = https.request(url, { method: "POST", agent, headers }, (response) => {
      let text = "";
      response.setEncoding("utf8");
      response.on("data", (chunk) => (text += chunk));
      response.on("end", () => resolve({ status: response.statusCode, body: JSON.parse(text) }));
    });
    request.on("error", reject);
    request.end(body);
  });
}

async function viaFetch() {
  const response = await fetch(url, { method: "POST", headers, body });
  return { status: response.status, body: await response.json() };
}

let result;
if (scenario === "https") {
  result = await viaHttps();
} else if (scenario === "fetch") {
  setGlobalDispatcher(new EnvHttpProxyAgent());
  result = await viaFetch();
} else if (scenario === "fetch-bare") {
  result = await viaFetch();
} else {
  throw new Error(`unknown scenario ${scenario}`);
}
console.log(JSON.stringify(result));
