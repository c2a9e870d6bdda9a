"use strict";
// Sign-in: post the token as JSON; the server answers with a session cookie.
document.getElementById("signin").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("error");
  error.textContent = "";
  const resp = await fetch("api/signin", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: document.getElementById("token").value }),
  });
  if (resp.ok) {
    const next = new URLSearchParams(location.search).get("next");
    location.href = next === "agreement" ? "agreement" : "./";
  } else {
    const body = await resp.json().catch(() => ({}));
    error.textContent = (body.error && body.error.message) || "Sign-in failed.";
  }
});
