// The openai Node SDK's OpenAIRealtimeWS in transcription mode, against the server over TLS (the SDK forces
// wss). Streams a raw 24 kHz PCM16 file in 50 ms chunks at real-time pace and prints what came back as JSON.
// env: BASE_URL (https://127.0.0.1:PORT/v1), AUDIO (raw PCM16 file), TURNS (completions to wait for).
import { readFileSync } from "node:fs";
import OpenAI from "openai";
import { OpenAIRealtimeWS } from "openai/realtime/ws";

const client = new OpenAI({ apiKey: process.env.API_KEY ?? "unused", baseURL: process.env.BASE_URL });
const rt = new OpenAIRealtimeWS({ intent: "transcription" }, client);
const turns = Number(process.env.TURNS ?? 1);
const seen = [];
const transcripts = [];
const timer = setTimeout(() => finish(1), 120_000);

function finish(code) {
  clearTimeout(timer);
  console.log(JSON.stringify({ events: seen, transcripts, url: rt.url?.toString() }));
  rt.close();
  process.exit(code);
}

rt.on("event", (event) => {
  seen.push(event.type);
  if (event.type === "conversation.item.input_audio_transcription.completed") {
    transcripts.push(event.transcript);
    if (transcripts.length >= turns) finish(0);
  }
});
rt.on("error", (err) => {
  seen.push(`client error: ${err.message}`);
  finish(1);
});

rt.socket.on("open", async () => {
  rt.send({
    type: "session.update",
    session: { type: "transcription", audio: { input: { transcription: { model: "whisper-tiny.en" } } } },
  });
  const audio = readFileSync(process.env.AUDIO);
  const chunk = 2400; // 50 ms of 24 kHz PCM16
  for (let i = 0; i < audio.length; i += chunk) {
    rt.send({ type: "input_audio_buffer.append", audio: audio.subarray(i, i + chunk).toString("base64") });
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
});
