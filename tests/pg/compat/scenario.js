// The Postgres client-compatibility scenario for node-postgres (issue 16), direct and
// through Pake. Usage: node scenario.js URL PREFIX. Prints one JSON object: step name ->
// normalised result, or "error: <SQLSTATE>" (see tests/pg/matrix.rs).
'use strict'
const { Client } = require('pg')
const { from: copyFrom, to: copyTo } = require('pg-copy-streams')
const { pipeline } = require('stream/promises')
const { Readable, Writable } = require('stream')

const [url, prefix] = process.argv.slice(2)
const t = `${prefix}_t`
const u = `${prefix}_u`
const out = {}

async function step (name, fn) {
  try {
    out[name] = await fn()
  } catch (e) {
    out[name] = e.code ? `error: ${e.code}` : `client error: ${e.message.split(' ')[0]}`
  }
}
const rows = (r) => r.rows.map((row) => Object.values(row))
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// wait (up to 30 s) until a statement with this exact text is running on some server
async function runningOnTheServer (url, sql) {
  const w = new Client({ connectionString: url })
  await w.connect()
  try {
    for (let i = 0; i < 600; i++) {
      const r = await w.query("select count(*)::int as n from pg_stat_activity where state = 'active' and query = $1", [sql])
      if (r.rows[0].n > 0) return
      await sleep(50)
    }
  } finally {
    await w.end()
  }
}

async function main () {
  const c = new Client({ connectionString: url })
  const params = {}
  c.connection.on('parameterStatus', (m) => { params[m.parameterName] = m.parameterValue })
  await c.connect()
  await c.query(`drop table if exists ${t}, ${u}`)
  await c.query(`create table ${t} (a int); insert into ${t} values (1), (2)`)
  // a named query is prepared once per connection; the table changes its result type
  const named = { name: 'sel_t', text: `select * from ${t} where a > $1 order by a` }
  await step('named_before', async () => rows(await c.query({ ...named, values: [0] })))
  await c.query(`alter table ${t} add column b text default 'x'`)
  await step('named_after_alter', async () => rows(await c.query({ ...named, values: [0] })))
  await step('fresh_after_alter', async () => rows(await c.query(`select * from ${t} where a > $1 order by a`, [0])))
  // an explicitly named statement executed later, after other work
  await step('named2_first', async () => rows(await c.query({ name: 'plus', text: 'select $1::int + 1 as v', values: [1] })))
  await step('named2_other', async () => rows(await c.query('select 7 as v')))
  await step('named2_later', async () => rows(await c.query({ name: 'plus', text: 'select $1::int + 1 as v', values: [41] })))
  // a server error, then the connection keeps working
  await c.query(`create table ${u} (a int primary key)`)
  await step('error_mid', async () => {
    const got = []
    for (const v of [1, 2, 1, 3]) {
      try {
        await c.query(`insert into ${u} values ($1)`, [v])
        got.push('ok')
      } catch (e) {
        got.push(`error: ${e.code}`)
      }
    }
    return got
  })
  await step('error_after', async () => rows(await c.query(`select count(*)::int from ${u}`)))
  // pipelining client: queries sent back to back, an error in the middle
  const p = new Client({ connectionString: url, pipeline: true })
  await p.connect()
  await step('pipeline_error', async () => {
    const qs = ['select 1 as v', 'select 1/0 as v', 'select 3 as v'].map((q) => p.query(q).then(rows, (e) => `error: ${e.code}`))
    return Promise.all(qs)
  })
  await step('pipeline_after', async () => rows(await p.query('select 4 as v')))
  await p.end()
  // cancel (node-postgres sends a CancelRequest with the backend key it was given). Its
  // cancel does not wait for the server to take the request, and the server drops one that
  // lands between statements: the cancel goes only once the statement runs, and the sleep
  // is long enough that a request slowed down by a loaded machine still lands inside it
  // (with a 5 s sleep, one that took longer on CI hit the next step's COPY instead)
  await step('cancel', async () => {
    const sql = `select pg_sleep(60) /* ${prefix} cancel */`
    const q = c.query(sql)
    await runningOnTheServer(url, sql)
    const k = new Client({ connectionString: url })
    k.cancel(c, c._activeQuery)
    return rows(await q)
  })
  await step('after_cancel', async () => rows(await c.query('select 1 as v')))
  // COPY both ways
  await step('copy_in', async () => {
    await pipeline(Readable.from(['100\n', '101\n']), c.query(copyFrom(`copy ${u} (a) from stdin`)))
    return rows(await c.query(`select count(*)::int from ${u} where a >= 100`))
  })
  await step('copy_out', async () => {
    const chunks = []
    await pipeline(c.query(copyTo(`copy (select a from ${u} where a >= 100 order by a) to stdout`)),
      new Writable({ write (chunk, _e, cb) { chunks.push(chunk.toString()); cb() } }))
    return chunks.join('')
  })
  // ParameterStatus values are the server's
  for (const name of ['client_encoding', 'server_encoding', 'DateStyle', 'integer_datetimes']) {
    out[`param_${name}`] = params[name]
  }
  // a second connection terminates the server behind the first (inside a transaction)
  const victim = new Client({ connectionString: url })
  victim.on('error', (e) => { out.terminated_event = e.code ? `error: ${e.code}` : e.message })
  await victim.connect()
  await victim.query('begin')
  const pid = (await victim.query('select pg_backend_pid() as pid')).rows[0].pid
  await step('terminate', async () => rows(await c.query('select pg_terminate_backend($1)', [pid])))
  await sleep(300)
  await step('terminated_victim', async () => rows(await victim.query('select 1')))
  await step('after_terminate', async () => rows(await c.query('select 2 as v')))
  await c.query(`drop table ${t}, ${u}`)
  await c.end()
  console.log(JSON.stringify(out, Object.keys(out).sort()))
}

main().catch((e) => { console.error(e); process.exit(1) })
