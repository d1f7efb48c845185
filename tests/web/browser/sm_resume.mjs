// xmpp.js (@xmpp/client) in Node over TCP: SASL2 + Bind2 with stream management enabled
// inline; the TCP connection is killed; its reconnect logs in again (FAST) with the XEP-0198
// <resume/> inline in <authenticate/>. Prints one JSON line; exits 0 when the session was
// resumed once and every message arrived exactly once, in order.
import { client, xml } from "@xmpp/client";

const port = process.argv[2];
const make = (username) => client({ service: `xmpp://127.0.0.1:${port}`, domain: "localhost",
  username, password: "secret", resource: "node" });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const alice = make("alice");
const bob = make("bob");
const got = [];
let resumed = 0;
let smOffered = false;
alice.on("stanza", (s) => { if (s.is("message")) got.push(s.getChildText("body")); });
alice.on("element", (e) => {
  if (e.is("features") && e.getChild("sm", "urn:xmpp:sm:3") && alice.jid?.resource) smOffered = true;
});
alice.on("error", () => {});  // the killed connection; the reconnect module takes over
// bob's errors count until he stops: a reply his middleware sends while his own stream is
// closing (an ack to the server's last <r/>) has no socket left to go to, and is no fault
let stopping = false;
const bobErrors = [];
bob.on("error", (err) => { if (!stopping) bobErrors.push(String(err)); });
alice.streamManagement.on("resumed", () => { resumed += 1; });
await alice.start();
await bob.start();
const full = alice.jid.toString();
const say = (body) => bob.send(xml("message", { to: full, type: "chat" }, xml("body", {}, body)));
await say("before");
for (let i = 0; i < 50 && got.length < 1; i++) await sleep(100);
const enabled = alice.streamManagement.enabled;
alice.socket.socket.destroy();
await sleep(300);
await say("while-away");
for (let i = 0; i < 100 && (resumed === 0 || got.length < 2); i++) await sleep(100);
await sleep(300);
const sameJid = alice.jid?.toString() === full;
console.log(JSON.stringify({ enabled, resumed, sameJid, got, smOffered, bobErrors }));
stopping = true;
await bob.stop();
await alice.stop();
process.exit(enabled && resumed === 1 && sameJid && !smOffered && bobErrors.length === 0
  && got.join(",") === "before,while-away" ? 0 : 1);
