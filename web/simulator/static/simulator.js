// The simulator page: send what the contact types, show the bot's replies as the
// channel would, and the execution beside the chat.
"use strict";

const $ = (id) => document.getElementById(id);
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;

// GSM 03.38 basic characters (and the escape-table ones, which count twice).
const GSM = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
  "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM_EXTENDED = "^{}\\[~]|€";

/** How many SMS segments a text takes (GSM-7: 160/153 characters, else UCS-2: 70/67). */
function smsSegments(text) {
  let units = 0;
  let gsm = true;
  for (const char of text) {
    if (GSM.includes(char)) units += 1;
    else if (GSM_EXTENDED.includes(char)) units += 2;
    else { gsm = false; break; }
  }
  if (!gsm) {
    const length = [...text].length;
    return { encoding: "UCS-2", segments: length <= 70 ? 1 : Math.ceil(length / 67) };
  }
  return { encoding: "GSM-7", segments: units <= 160 ? 1 : Math.ceil(units / 153) };
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

/** WhatsApp's own formatting: *bold*, _italic_, ~strike~, ```mono```. */
function whatsappHtml(text) {
  return escapeHtml(text)
    .replace(/```([\s\S]+?)```/g, "<code>$1</code>")
    .replace(/(^|[\s])\*([^*\n]+)\*(?=[\s.,!?]|$)/g, "$1<b>$2</b>")
    .replace(/(^|[\s])_([^_\n]+)_(?=[\s.,!?]|$)/g, "$1<i>$2</i>")
    .replace(/(^|[\s])~([^~\n]+)~(?=[\s.,!?]|$)/g, "$1<s>$2</s>");
}

function channel() { return $("channel").value; }

function addBubble(author, text, meta) {
  const item = document.createElement("li");
  item.className = author;
  item.innerHTML = channel() === "whatsapp" ? whatsappHtml(text) : escapeHtml(text);
  if (channel() === "sms" && author !== "contact") {
    const { encoding, segments } = smsSegments(text);
    meta = `${meta ? meta + " · " : ""}${segments} segment${segments === 1 ? "" : "s"} (${encoding})`;
  }
  if (meta) {
    const small = document.createElement("span");
    small.className = "meta";
    small.textContent = meta;
    item.appendChild(small);
  }
  $("chat").appendChild(item);
  $("chat").scrollTop = $("chat").scrollHeight;
  return item;
}

function addDivider(text) {
  const item = document.createElement("li");
  item.className = "divider";
  item.textContent = text;
  $("chat").appendChild(item);
}

function showState(state) {
  $("state-flow").textContent = state ? state.flow : "–";
  $("state-step").textContent = state ? state.step : "–";
  $("state-status").textContent = state ? state.status : "–";
  $("variables").textContent = JSON.stringify(state ? state.variables : {}, null, 2);
}

function showCalls(calls) {
  const list = $("llm-calls");
  list.innerHTML = "";
  if (!calls.length) {
    list.innerHTML = '<li class="muted">none</li>';
    return;
  }
  for (const call of calls) {
    const item = document.createElement("li");
    item.className = "llm-call";
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    const usage = call.usage ? ` · ${call.usage.prompt_tokens}+${call.usage.completion_tokens} tokens · ${call.usage.latency_ms} ms` : "";
    summary.textContent = `${call.model}${call.schema ? " · " + call.schema : ""}${usage}${call.error ? " · failed" : ""}`;
    details.appendChild(summary);
    const messages = document.createElement("pre");
    messages.textContent = call.messages.map((m) => `[${m.role}]\n${m.content}`).join("\n\n");
    details.appendChild(messages);
    const answer = document.createElement("pre");
    answer.className = "answer";
    answer.textContent = call.error ? call.error : (call.data ? JSON.stringify(call.data, null, 2) : call.text);
    details.appendChild(answer);
    item.appendChild(details);
    list.appendChild(item);
  }
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

async function send(event) {
  event.preventDefault();
  const text = $("text").value;
  if (!text.trim()) return;
  $("text").value = "";
  addBubble("contact", text);
  $("send").disabled = true;
  try {
    const data = await post(document.body.dataset.send, {
      flow: $("flow").value, phone: $("phone").value, channel: channel(), name: $("name").value, text,
    });
    for (const reply of data.replies) addBubble("bot", reply);
    showState(data.state);
    showCalls(data.llm_calls);
    $("steps-run").textContent = data.steps_run.length ? data.steps_run.join(" → ") : "–";
    showError(data.error ? `The turn failed: ${data.error}` : "");
  } catch (error) {
    showError(error.message);
  } finally {
    $("send").disabled = false;
    $("text").focus();
  }
}

async function refresh() {
  try {
    showState((await post(document.body.dataset.state, { phone: $("phone").value })).state);
    showError("");
  } catch (error) {
    showError(error.message);
  }
}

async function reset() {
  try {
    await post(document.body.dataset.reset, { phone: $("phone").value });
    $("chat").innerHTML = "";
    addDivider("Reset: the next message starts the flow afresh.");
    showState(null);
    showCalls([]);
    $("steps-run").textContent = "–";
    showError("");
  } catch (error) {
    showError(error.message);
  }
}

$("composer").addEventListener("submit", send);
$("reset").addEventListener("click", reset);
$("phone").addEventListener("change", refresh);
$("channel").addEventListener("change", () => {
  $("chat-pane").className = `chat ${channel()}`;
  addDivider(`Now on ${channel() === "sms" ? "SMS" : "WhatsApp"}`);
});
refresh();
