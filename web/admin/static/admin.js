// Behaviour the pages declare with data- attributes: the Content-Security-Policy
// allows no inline event handlers (onsubmit=, onchange=).
"use strict";

document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

document.addEventListener("change", (event) => {
  if (event.target.matches && event.target.matches("[data-submit-on-change]")) {
    event.target.form.submit();
  }
});
