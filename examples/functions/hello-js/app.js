// A wasi:http handler in JavaScript (componentize-js runs it on StarlingMonkey, which gives
// a component the web's fetch-event API):
//
// - GET  /  answers "hello from javascript";
// - POST /  echoes the JSON body back under "echo" (400 for a body that is not JSON).

addEventListener("fetch", (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  if (request.method === "POST") {
    const text = await request.text();
    try {
      const doc = JSON.parse(text || "null");
      return json(200, { echo: doc });
    } catch (e) {
      return json(400, { error: String(e) });
    }
  }
  return new Response("hello from javascript\n", {
    headers: { "content-type": "text/plain" },
  });
}

function json(status, value) {
  return new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json" },
  });
}
