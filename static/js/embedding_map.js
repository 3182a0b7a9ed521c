// Draws the embedding map: fetches points from the JSON endpoint and renders SVG circles.
// No chart library: a few hundred lines would be overkill for a scatter plot with a legend.
(function () {
  "use strict";
  const svg = document.getElementById("embedding-map");
  if (!svg) return;
  const NS = "http://www.w3.org/2000/svg";
  const status = document.getElementById("map-status");
  const legend = document.getElementById("map-legend");
  const tooltip = document.getElementById("map-tooltip");
  const select = document.getElementById("map-color");
  const WIDTH = 1000, HEIGHT = 700, PAD = 20;

  function itemUrl(externalId) {
    return svg.dataset.itemUrl.replace("ITEM", encodeURIComponent(externalId));
  }

  function clear() {
    svg.querySelectorAll("g.points").forEach((node) => node.remove());
    legend.replaceChildren();
  }

  function draw(data) {
    clear();
    const group = document.createElementNS(NS, "g");
    group.setAttribute("class", "points");
    const radius = data.points.length > 2000 ? 3 : 5;
    for (const [x, y, category, externalId, title] of data.points) {
      const circle = document.createElementNS(NS, "circle");
      circle.setAttribute("cx", (PAD + x * (WIDTH - 2 * PAD)).toFixed(1));
      circle.setAttribute("cy", (PAD + (1 - y) * (HEIGHT - 2 * PAD)).toFixed(1));
      circle.setAttribute("r", radius);
      circle.setAttribute("fill", data.categories[category] ? data.categories[category].color : "#9aa3ad");
      circle.dataset.item = externalId;
      circle.dataset.title = title;
      circle.setAttribute("tabindex", "-1");
      const label = document.createElementNS(NS, "title");
      label.textContent = title;
      circle.appendChild(label);
      group.appendChild(circle);
    }
    svg.appendChild(group);
    svg.dataset.points = String(data.points.length);
    for (const category of data.categories) {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = category.color;
      item.append(swatch, `${category.name} (${category.count})`);
      legend.appendChild(item);
    }
    const explained = data.explained.map((share) => `${Math.round(share * 100)}%`).join(" + ");
    status.textContent = `${data.points.length} items of v${data.version}, coloured by ${data.color}; ` +
      `the two axes explain ${explained} of the variance.`;
  }

  function load(color) {
    status.textContent = "Loading points…";
    const url = `${svg.dataset.src}?color=${encodeURIComponent(color)}`;
    fetch(url, { headers: { Accept: "application/json" } })
      .then((response) => response.json().then((body) => ({ ok: response.ok, body })))
      .then(({ ok, body }) => {
        if (!ok) { status.textContent = body.error || "The map could not be loaded."; return; }
        draw(body);
      })
      .catch((error) => { status.textContent = `The map could not be loaded: ${error.message}`; });
  }

  svg.addEventListener("mousemove", (event) => {
    const target = event.target;
    if (target.tagName !== "circle") { tooltip.hidden = true; return; }
    tooltip.textContent = target.dataset.title;
    tooltip.style.left = `${event.clientX + 12}px`;
    tooltip.style.top = `${event.clientY + 12}px`;
    tooltip.hidden = false;
  });
  svg.addEventListener("mouseleave", () => { tooltip.hidden = true; });
  svg.addEventListener("click", (event) => {
    if (event.target.tagName === "circle") window.location.href = itemUrl(event.target.dataset.item);
  });
  if (select) {
    select.addEventListener("change", () => {
      const params = new URLSearchParams(window.location.search);
      params.set("color", select.value);
      window.history.replaceState(null, "", `?${params}`);
      load(select.value);
    });
  }
  load(select ? select.value : "genre");
})();
