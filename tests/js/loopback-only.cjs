// Preloaded (`node --require`) into every Node client a test runs: the
// process stops (exit 3, saying where) the moment anything opens a TCP
// connection to a host that is not loopback, so a client that went around
// the proxy fails the test instead of reaching a real host. Every TCP and
// TLS connection in Node goes through net.Socket#connect.
const net = require("node:net");

const loopback = (host) =>
  host === undefined ||
  host === "localhost" ||
  /^127\./.test(host) ||
  host === "::1" ||
  host === "[::1]";

const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  const options = typeof args[0] === "object" && !Array.isArray(args[0]) ? args[0] : {};
  const host = options.path ? "localhost" : (options.host ?? (typeof args[1] === "string" ? args[1] : undefined));
  if (!loopback(host)) {
    process.stderr.write(`not loopback: the client connected to ${host}\n`);
    process.exit(3);
  }
  return connect.apply(this, args);
};
