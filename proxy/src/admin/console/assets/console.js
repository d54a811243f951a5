// The approval console. Lists come from the JSON endpoints and are fetched
// again only when the event stream says something changed. Every value is
// written with textContent: nothing from the server is ever parsed as HTML.
'use strict';

(() => {
  let csrf = '';
  // Server clock minus this browser's, so "waiting" counts from the
  // server's timestamps whatever this machine's clock says.
  let skew = 0;

  const $ = (selector, root = document) => root.querySelector(selector);

  async function call(method, url, body) {
    const init = { method, headers: {}, credentials: 'same-origin', cache: 'no-store' };
    if (method !== 'GET') init.headers['X-CSRF-Token'] = csrf;
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    if (response.status === 401) {
      location.assign('/console/login');
      throw new Error('signed out');
    }
    let data = {};
    try {
      data = await response.json();
    } catch (_) {
      // An empty or non-JSON answer: the status says enough.
    }
    if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
    return data;
  }

  function text(element, value) {
    element.textContent = value === undefined || value === null ? '' : String(value);
    return element;
  }

  function cell(row, value, className) {
    const td = text(document.createElement('td'), value);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function duration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${s % 60}s`;
    const h = Math.floor(m / 60);
    return `${h}h ${m % 60}m`;
  }

  const serverNow = () => Date.now() + skew;

  function notice(message, kind) {
    const p = $('#notice');
    text(p, message);
    p.className = `notice ${kind || ''}`;
    p.hidden = false;
  }

  // Each list keeps only the answer to its latest request.
  function latest(load) {
    let current = 0;
    return async (...args) => {
      const mine = ++current;
      try {
        const data = await load(...args);
        return mine === current ? data : undefined;
      } catch (e) {
        if (mine === current) notice(e.message, 'bad');
        return undefined;
      }
    };
  }

  // ---- pending approvals -------------------------------------------------

  function requestLine(a) {
    const port = a.port && a.port !== 443 && a.port !== 80 ? `:${a.port}` : '';
    const query = a.query ? `?${a.query}` : '';
    return `${a.method} ${a.host}${port}${a.path}${query}`;
  }

  function card(a) {
    const node = $('#approval-card').content.firstElementChild.cloneNode(true);
    node.dataset.approvalId = a.id;
    node.dataset.created = String(a.created_ms);
    const field = (name, value) => text($(`[data-field="${name}"]`, node), value);
    field('action', a.action);
    field('workload', a.workload);
    field('request', requestLine(a));
    field('resource', a.resource);
    field('task_purpose', a.task_purpose || (a.task_id ? '' : 'no task'));
    field('task_id', a.task_id);
    field('message', a.message || 'approval required');
    field('policy_ids', a.policy_ids && a.policy_ids.length ? `(${a.policy_ids.join(', ')})` : '');
    field('body_sha256', a.body_sha256);
    field('id', a.id);
    field('expires', new Date(a.expires_ms).toLocaleString());
    field('waited', duration(serverNow() - a.created_ms));
    $('.approve', node).addEventListener('click', () => decide(node, a, true));
    $('.deny', node).addEventListener('click', () => decide(node, a, false));
    return node;
  }

  async function decide(node, a, approve) {
    const reason = $('input[name="reason"]', node).value.trim();
    const error = $('.error', node);
    if (!approve && !reason) {
      text(error, 'A denial needs a reason: the agent is told it.');
      error.hidden = false;
      return;
    }
    error.hidden = true;
    node.querySelectorAll('button').forEach((b) => { b.disabled = true; });
    const verb = approve ? 'approve' : 'deny';
    try {
      await call('POST', `/console/api/approvals/${encodeURIComponent(a.id)}/${verb}`, { reason });
      notice(`${approve ? 'Approved' : 'Denied'}: ${a.action} by ${a.workload} (${a.id})`, approve ? 'good' : 'bad');
      node.remove();
      updatePendingCount();
    } catch (e) {
      text(error, e.message);
      error.hidden = false;
      node.querySelectorAll('button').forEach((b) => { b.disabled = false; });
    }
  }

  function updatePendingCount() {
    const n = $('#pending').children.length;
    text($('#pending-count'), n);
    $('#pending-empty').hidden = n > 0;
  }

  const fetchPending = latest(() => call('GET', '/console/api/approvals'));

  async function loadPending() {
    const data = await fetchPending();
    if (!data) return;
    skew = data.now_ms - Date.now();
    const list = $('#pending');
    const wanted = new Set(data.approvals.map((a) => a.id));
    const shown = new Map();
    for (const node of [...list.children]) {
      if (wanted.has(node.dataset.approvalId)) shown.set(node.dataset.approvalId, node);
      else node.remove();
    }
    // Cards already shown stay where they are, so a reason being typed
    // keeps its focus; new ones are put in order around them.
    data.approvals.forEach((a, i) => {
      const node = shown.get(a.id) || card(a);
      if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null);
    });
    updatePendingCount();
  }

  function tickWaited() {
    document.querySelectorAll('#pending .approval').forEach((node) => {
      text($('[data-field="waited"]', node), duration(serverNow() - Number(node.dataset.created)));
    });
  }

  // ---- recent decisions --------------------------------------------------

  const fetchDecisions = latest((query) => call('GET', `/console/api/decisions?${query}`));

  async function loadDecisions() {
    const query = new URLSearchParams(new FormData($('#filters'))).toString();
    const data = await fetchDecisions(query);
    if (!data) return;
    const rows = data.decisions.map((d) => {
      const row = document.createElement('tr');
      row.dataset.decisionId = d.decision_id;
      const when = cell(row, new Date(d.time).toLocaleTimeString());
      when.title = d.time;
      cell(row, d.workload);
      cell(row, d.action);
      cell(row, d.resource);
      cell(row, `${d.method} ${d.host}${d.path}`, 'mono');
      cell(row, d.decision, `outcome ${d.decision}`);
      cell(row, d.reason);
      cell(row, d.status || '');
      cell(row, d.approver ? `${d.approval} (${d.approver})` : d.approval, 'mono');
      return row;
    });
    $('#decisions tbody').replaceChildren(...rows);
    $('#decisions-empty').hidden = rows.length > 0;
  }

  let filterTimer = 0;
  function filtersChanged() {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(loadDecisions, 200);
  }

  // ---- tasks -------------------------------------------------------------

  const fetchTasks = latest(() => call('GET', '/console/api/tasks'));

  function endButton(t) {
    const button = text(document.createElement('button'), 'End');
    button.type = 'button';
    button.className = 'danger';
    let armed = 0;
    // Two clicks: ending a task revokes its token at once.
    button.addEventListener('click', async () => {
      if (!armed) {
        text(button, 'End now?');
        armed = setTimeout(() => { armed = 0; text(button, 'End'); }, 5000);
        return;
      }
      clearTimeout(armed);
      button.disabled = true;
      try {
        await call('POST', `/console/api/tasks/${encodeURIComponent(t.id)}/end`);
        notice(`Ended task ${t.id} (${t.purpose})`, 'good');
        loadTasks();
      } catch (e) {
        notice(e.message, 'bad');
        button.disabled = false;
        armed = 0;
        text(button, 'End');
      }
    });
    return button;
  }

  async function loadTasks() {
    const data = await fetchTasks();
    if (!data) return;
    const rows = data.tasks.map((t) => {
      const row = document.createElement('tr');
      row.dataset.taskId = t.id;
      cell(row, t.id, 'mono');
      cell(row, t.workload);
      cell(row, t.purpose);
      cell(row, t.state, `state ${t.state}`);
      cell(row, t.state === 'active' ? `in ${duration(t.expires_ms - data.now_ms)}` : '');
      cell(row, t.budgets.map((b) => `${b.class} ${b.used}/${b.limit}`).join(', '));
      const actions = cell(row, '');
      if (t.state === 'active') actions.appendChild(endButton(t));
      return row;
    });
    $('#tasks tbody').replaceChildren(...rows);
    $('#tasks-empty').hidden = rows.length > 0;
  }

  // ---- live updates ------------------------------------------------------

  function live(on) {
    const badge = $('#live');
    text(badge, on ? 'live' : 'reconnecting…');
    badge.className = `live ${on ? 'on' : 'off'}`;
  }

  function listen() {
    const events = new EventSource('/console/api/events');
    events.addEventListener('ready', () => {
      live(true);
      loadPending();
      loadDecisions();
      loadTasks();
    });
    events.addEventListener('approvals', () => {
      loadPending();
      loadTasks();
    });
    events.addEventListener('tasks', loadTasks);
    events.addEventListener('decisions', () => {
      loadDecisions();
      loadTasks();
    });
    events.addEventListener('signed_out', () => {
      events.close();
      location.assign('/console/login');
    });
    events.addEventListener('error', () => {
      live(false);
      // The browser retries a dropped stream by itself; a refused one
      // (signed out) it gives up on, and the session call says why.
      if (events.readyState === EventSource.CLOSED) {
        setTimeout(() => call('GET', '/console/api/session').then(listen, () => {}), 3000);
      }
    });
  }

  async function start() {
    const session = await call('GET', '/console/api/session');
    csrf = session.csrf_token;
    text($('#approver'), session.approver);
    $('#logout').addEventListener('click', async () => {
      try {
        await call('POST', '/console/logout');
      } finally {
        location.assign('/console/login');
      }
    });
    $('#filters').addEventListener('input', filtersChanged);
    $('#filters').addEventListener('submit', (e) => { e.preventDefault(); loadDecisions(); });
    setInterval(tickWaited, 1000);
    listen();
  }

  document.addEventListener('DOMContentLoaded', () => {
    start().catch((e) => notice(e.message, 'bad'));
  });
})();
