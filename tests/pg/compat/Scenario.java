// The Postgres client-compatibility scenario for pgjdbc (issue 16), direct and through Pake.
// Usage: java -cp /usr/share/java/postgresql.jar Scenario.java URL PREFIX (a single-file
// source program: no build tool). URL is a postgres:// URL; the JDBC URL is derived from it.
// Prints one JSON object: step name -> normalised result, or "error: <SQLSTATE>" (see
// tests/pg/matrix.rs). Written as a Java developer uses the driver: PreparedStatement with
// the default prepareThreshold, executeBatch, setAutoCommit(false), savepoints, cancel,
// CopyManager, LargeObjectManager, getNotifications.

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.net.URI;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.PGStatement;
import org.postgresql.copy.CopyManager;
import org.postgresql.largeobject.LargeObject;
import org.postgresql.largeobject.LargeObjectManager;

public class Scenario {
    interface Step {
        Object run() throws Exception;
    }

    static final Map<String, Object> out = new TreeMap<>();
    static String host, user, password;
    static int port;

    static void step(String name, Step fn) {
        try {
            out.put(name, fn.run());
        } catch (SQLException e) {
            out.put(name, e.getSQLState() != null ? "error: " + e.getSQLState()
                    : "client error: " + e.getClass().getSimpleName());
        } catch (Exception e) {
            out.put(name, "client error: " + e.getClass().getSimpleName());
        }
    }

    /** A JDBC connection to `db` with extra driver properties ("key=value"). */
    static Connection connect(String db, String... props) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        for (String kv : props) {
            String[] a = kv.split("=", 2);
            p.setProperty(a[0], a[1]);
        }
        return DriverManager.getConnection("jdbc:postgresql://" + host + ":" + port + "/" + db, p);
    }

    static List<Object> rows(ResultSet rs) throws SQLException {
        List<Object> all = new ArrayList<>();
        int n = rs.getMetaData().getColumnCount();
        while (rs.next()) {
            List<Object> row = new ArrayList<>();
            for (int i = 1; i <= n; i++) {
                Object v = rs.getObject(i);
                row.add(v == null || v instanceof Number || v instanceof Boolean ? v : v.toString());
            }
            all.add(row);
        }
        rs.close();
        return all;
    }

    static List<Object> query(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement()) {
            return rows(st.executeQuery(sql));
        }
    }

    static Object one(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            Object v = rs.getObject(1);
            return v == null || v instanceof Number || v instanceof Boolean ? v : v.toString();
        }
    }

    static void exec(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement()) {
            st.execute(sql);
        }
    }

    static String sqlState(SQLException e) {
        return e.getSQLState() == null ? "client error" : "error: " + e.getSQLState();
    }

    /** `times` executions of one PreparedStatement; its rows each time, and whether the driver
     * has switched it to a named server-side statement. */
    static List<Object> repeated(Connection c, String sql, int times) throws SQLException {
        List<Object> got = new ArrayList<>();
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            for (int i = 0; i < times; i++) {
                ps.setInt(1, 0);
                got.add(rows(ps.executeQuery()));
            }
            got.add(ps.unwrap(PGStatement.class).isUseServerPrepare() ? "server-prepared" : "unnamed");
        }
        return got;
    }

    public static void main(String[] args) throws Exception {
        URI uri = new URI(args[0]);
        String prefix = args[1];
        String[] info = uri.getRawUserInfo().split(":", 2);
        user = URLDecoder.decode(info[0], StandardCharsets.UTF_8);
        password = URLDecoder.decode(info[1], StandardCharsets.UTF_8);
        host = uri.getHost();
        port = uri.getPort();
        String db = uri.getPath().substring(1);
        String t = prefix + "_t", u = prefix + "_u", tmp = prefix + "_tmp";

        Connection c = connect(db);
        exec(c, "drop table if exists " + t + ", " + u);
        exec(c, "create table " + t + " (a int)");
        exec(c, "insert into " + t + " values (1), (2)");

        // server-side prepared statements: pgjdbc names a statement (S_n) at its 5th
        // execution (prepareThreshold); the table then changes its result type and the
        // driver re-prepares on "cached plan must not change result type"
        String sel = "select * from " + t + " where a > ? order by a";
        PreparedStatement kept = c.prepareStatement(sel);
        step("threshold_default", () -> repeated(c, sel, 6));
        step("kept_before", () -> {
            List<Object> got = new ArrayList<>();
            for (int i = 0; i < 6; i++) {
                kept.setInt(1, 0);
                got.add(rows(kept.executeQuery()));
            }
            return got.get(5);
        });
        exec(c, "alter table " + t + " add column b text default 'x'");
        step("kept_after_alter", () -> {
            kept.setInt(1, 0);
            return rows(kept.executeQuery());
        });
        step("kept_after_alter_again", () -> {
            kept.setInt(1, 1);
            return rows(kept.executeQuery());
        });
        step("threshold_after_alter", () -> repeated(c, sel, 6));
        // in a transaction (autosave=never, the default) the same error reaches the
        // application and fails the transaction
        step("alter_in_transaction", () -> {
            c.setAutoCommit(false);
            try {
                kept.setInt(1, 0);
                rows(kept.executeQuery());
                exec(c, "alter table " + t + " alter column b type varchar(10)");
                kept.setInt(1, 0);
                return rows(kept.executeQuery());
            } catch (SQLException e) {
                c.rollback();
                return sqlState(e);
            } finally {
                c.setAutoCommit(true);
            }
        });
        step("after_alter_in_transaction", () -> {
            kept.setInt(1, 1);
            return rows(kept.executeQuery());
        });
        // autosave=conservative: the driver sets a savepoint before each statement and, on a
        // stale plan, rolls back to it and re-prepares
        step("autosave_conservative", () -> {
            try (Connection a = connect(db, "autosave=conservative", "prepareThreshold=1")) {
                a.setAutoCommit(false);
                PreparedStatement ps = a.prepareStatement(sel);
                ps.setInt(1, 0);
                List<Object> got = new ArrayList<>();
                got.add(rows(ps.executeQuery()));
                exec(a, "alter table " + t + " add column c int default 7");
                ps.setInt(1, 0);
                got.add(rows(ps.executeQuery()));
                a.rollback();
                ps.setInt(1, 0);
                got.add(rows(ps.executeQuery()));
                a.commit();
                return got;
            }
        });
        // prepareThreshold=1 (named from the first execution), 0 (never), -1 (forceBinary:
        // named and binary results at once)
        for (String th : new String[] {"1", "0", "-1"}) {
            step("threshold_" + th, () -> {
                try (Connection p = connect(db, "prepareThreshold=" + th)) {
                    List<Object> got = repeated(p, sel, 3);
                    try (PreparedStatement ps = p.prepareStatement(
                            "select ?::int + 1, ?::text || 'b', ?::numeric * 2, ?::bytea,"
                                    + " ?::timestamptz at time zone 'UTC', array[?::int8, 2],"
                                    + " ?::uuid, ?::float8, ?::bool")) {
                        for (int i = 0; i < 2; i++) {
                            ps.setInt(1, 41);
                            ps.setString(2, "a");
                            ps.setBigDecimal(3, new java.math.BigDecimal("1.25"));
                            ps.setBytes(4, new byte[] {1, 2, (byte) 255});
                            ps.setTimestamp(5, java.sql.Timestamp.valueOf("2026-01-02 03:04:05"));
                            ps.setLong(6, 1L);
                            ps.setObject(7, java.util.UUID.fromString("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
                            ps.setDouble(8, 0.5);
                            ps.setBoolean(9, true);
                            try (ResultSet rs = ps.executeQuery()) {
                                rs.next();
                                got.add(Arrays.asList(rs.getInt(1), rs.getString(2),
                                        rs.getBigDecimal(3).toPlainString(), Arrays.toString(rs.getBytes(4)),
                                        rs.getString(5) != null, Arrays.toString((Object[]) rs.getArray(6).getArray()),
                                        rs.getString(7), rs.getDouble(8), rs.getBoolean(9)));
                            }
                        }
                    }
                    return got;
                }
            });
        }
        // the same statement text on two connections, one of them a second run against
        // Pake's servers
        step("two_connections", () -> {
            try (Connection p = connect(db, "prepareThreshold=1"); Connection q = connect(db, "prepareThreshold=1")) {
                return Arrays.asList(repeated(p, sel, 2), repeated(q, sel, 2), repeated(p, sel, 2));
            }
        });

        // more named statements than a server keeps (Pake closes the least recently used
        // beyond max_prepared_statements and prepares them again when they come back)
        step("many_statements", () -> {
            try (Connection p = connect(db, "prepareThreshold=1", "preparedStatementCacheQueries=700")) {
                List<PreparedStatement> all = new ArrayList<>();
                long sum = 0;
                for (int round = 0; round < 2; round++) {
                    for (int i = 0; i < 600; i++) {
                        if (round == 0) {
                            all.add(p.prepareStatement("select ?::int + " + i));
                        }
                        PreparedStatement ps = all.get(i);
                        ps.setInt(1, round);
                        try (ResultSet rs = ps.executeQuery()) {
                            rs.next();
                            sum += rs.getInt(1);
                        }
                    }
                }
                return sum;
            }
        });
        // the same statement names (S_1, S_2…) for other texts on two connections
        step("same_names_other_texts", () -> {
            try (Connection p = connect(db, "prepareThreshold=1"); Connection q = connect(db, "prepareThreshold=1")) {
                List<Object> got = new ArrayList<>();
                for (int i = 0; i < 2; i++) {
                    try (PreparedStatement a = p.prepareStatement("select ?::int + 1");
                            PreparedStatement b = q.prepareStatement("select ?::text || 'q'")) {
                        a.setInt(1, i);
                        b.setString(1, "t" + i);
                        got.add(rows(a.executeQuery()));
                        got.add(rows(b.executeQuery()));
                    }
                }
                return got;
            }
        });
        // DISCARD ALL / DEALLOCATE ALL: the driver forgets its statements and prepares again
        step("discard_all", () -> {
            try (Connection p = connect(db, "prepareThreshold=1")) {
                List<Object> got = new ArrayList<>();
                try (PreparedStatement ps = p.prepareStatement(sel)) {
                    exec(p, "set work_mem = '6MB'");
                    ps.setInt(1, 1);
                    got.add(rows(ps.executeQuery()));
                    exec(p, "discard all");
                    got.add(one(p, "show work_mem"));
                    ps.setInt(1, 1);
                    got.add(rows(ps.executeQuery()));
                    exec(p, "deallocate all");
                    ps.setInt(1, 1);
                    got.add(rows(ps.executeQuery()));
                }
                return got;
            }
        });
        // parameter and result metadata before any execution (Parse + Describe, no Execute)
        step("describe_only", () -> {
            try (PreparedStatement ps = c.prepareStatement("select a, b from " + t + " where a = ? and b = ?")) {
                java.sql.ParameterMetaData pm = ps.getParameterMetaData();
                java.sql.ResultSetMetaData rm = ps.getMetaData();
                return Arrays.asList(pm.getParameterCount(), pm.getParameterTypeName(1), pm.getParameterTypeName(2),
                        rm.getColumnCount(), rm.getColumnTypeName(1), rm.getColumnTypeName(2));
            }
        });
        // several statements in one execute: one Parse/Bind/Execute each, one Sync
        step("multi_statement", () -> {
            try (Statement st = c.createStatement()) {
                List<Object> got = new ArrayList<>();
                boolean rs = st.execute("select 1; select 2, 3; create temp table if not exists " + prefix
                        + "_m (a int) on commit drop; select 4");
                while (true) {
                    if (rs) {
                        got.add(rows(st.getResultSet()));
                    } else if (st.getUpdateCount() == -1) {
                        break;
                    } else {
                        got.add("count " + st.getUpdateCount());
                    }
                    rs = st.getMoreResults();
                }
                return got;
            }
        });
        // a server notice reaches the application as a warning
        step("warnings", () -> {
            try (Statement st = c.createStatement()) {
                st.execute("do $$ begin raise notice 'hello %', 42; end $$");
                java.sql.SQLWarning w = st.getWarnings();
                return w == null ? null : Arrays.asList(w.getMessage(), w.getSQLState());
            }
        });
        // a function called through the JDBC escape syntax
        step("callable", () -> {
            exec(c, "create or replace function " + prefix + "_f(x int) returns int language sql as 'select x * 3'");
            try (java.sql.CallableStatement cs = c.prepareCall("{? = call " + prefix + "_f(?)}")) {
                List<Object> got = new ArrayList<>();
                for (int i = 0; i < 6; i++) {
                    cs.registerOutParameter(1, java.sql.Types.INTEGER);
                    cs.setInt(2, i);
                    cs.execute();
                    got.add(cs.getInt(1));
                }
                exec(c, "drop function " + prefix + "_f(int)");
                return got;
            }
        });

        // executeBatch: pgjdbc sends Parse/Bind/Execute for each row and one Sync
        exec(c, "create table " + u + " (a int primary key, s text)");
        step("batch_autocommit", () -> {
            try (PreparedStatement ps = c.prepareStatement("insert into " + u + " values (?, ?)")) {
                for (int i = 1; i <= 10; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "r" + i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                return Arrays.asList(Arrays.toString(counts), one(c, "select count(*) from " + u));
            }
        });
        step("batch_transaction", () -> {
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("insert into " + u + " values (?, ?)")) {
                List<Object> got = new ArrayList<>();
                for (int i = 11; i <= 15; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "r" + i);
                    ps.addBatch();
                }
                got.add(Arrays.toString(ps.executeBatch()));
                c.rollback();
                got.add(one(c, "select count(*) from " + u));
                for (int i = 11; i <= 15; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "r" + i);
                    ps.addBatch();
                }
                got.add(Arrays.toString(ps.executeBatch()));
                c.commit();
                got.add(one(c, "select count(*) from " + u));
                return got;
            } finally {
                c.setAutoCommit(true);
            }
        });
        // a Statement batch of plain SQL
        step("statement_batch", () -> {
            try (Statement st = c.createStatement()) {
                st.addBatch("update " + u + " set s = 'x' where a = 1");
                st.addBatch("update " + u + " set s = 'y' where a > 13");
                st.addBatch("delete from " + u + " where a = 15");
                return Arrays.toString(st.executeBatch());
            }
        });
        // an error in the middle of a batch: BatchUpdateException, the connection lives on
        for (String mode : new String[] {"autocommit", "transaction"}) {
            step("batch_error_" + mode, () -> {
                c.setAutoCommit(mode.equals("autocommit"));
                try (PreparedStatement ps = c.prepareStatement("insert into " + u + " values (?, ?)")) {
                    for (int v : new int[] {100, 101, 1, 102}) {
                        ps.setInt(1, v);
                        ps.setString(2, "b");
                        ps.addBatch();
                    }
                    ps.executeBatch();
                    return "no error";
                } catch (BatchUpdateException e) {
                    List<Object> got = new ArrayList<>();
                    got.add(e.getSQLState());
                    got.add(e.getNextException() == null ? null : e.getNextException().getSQLState());
                    got.add(Arrays.toString(e.getUpdateCounts()));
                    if (!c.getAutoCommit()) {
                        try {
                            one(c, "select 1");
                        } catch (SQLException f) {
                            got.add(sqlState(f));
                        }
                        c.rollback();
                    }
                    got.add(one(c, "select count(*) from " + u + " where a >= 100"));
                    return got;
                } finally {
                    c.setAutoCommit(true);
                }
            });
        }
        // the batch again, on a connection that already named the statement
        step("batch_after_error", () -> {
            try (PreparedStatement ps = c.prepareStatement("insert into " + u + " values (?, ?)")) {
                for (int v : new int[] {200, 201}) {
                    ps.setInt(1, v);
                    ps.setString(2, "c");
                    ps.addBatch();
                }
                return Arrays.asList(Arrays.toString(ps.executeBatch()), one(c, "select count(*) from " + u));
            }
        });
        // a large batch (the driver sends a Sync now and then so neither side's buffers
        // fill), and reWriteBatchedInserts (multi-row VALUES)
        step("batch_large", () -> {
            try (PreparedStatement ps = c.prepareStatement("insert into " + u + " values (?, ?)")) {
                for (int i = 0; i < 3000; i++) {
                    ps.setInt(1, 10_000 + i);
                    ps.setString(2, "large " + i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                long ok = Arrays.stream(counts).filter(n -> n == 1).count();
                return Arrays.asList(counts.length, ok, one(c, "select count(*) from " + u + " where a >= 10000"));
            }
        });
        step("batch_rewritten", () -> {
            try (Connection r = connect(db, "reWriteBatchedInserts=true")) {
                try (PreparedStatement ps = r.prepareStatement("insert into " + u + " (a, s) values (?, ?)")) {
                    for (int i = 0; i < 300; i++) {
                        ps.setInt(1, 20_000 + i);
                        ps.setString(2, "rw");
                        ps.addBatch();
                    }
                    int[] counts = ps.executeBatch();
                    return Arrays.asList(counts.length, one(r, "select count(*) from " + u + " where a >= 20000"));
                }
            }
        });
        // generated keys (RETURNING) and a fetch size (a portal read in parts, in a transaction)
        step("generated_keys", () -> {
            try (PreparedStatement ps = c.prepareStatement("insert into " + u + " values (?, 'g')", new String[] {"a", "s"})) {
                ps.setInt(1, 300);
                ps.executeUpdate();
                return rows(ps.getGeneratedKeys());
            }
        });
        step("fetch_size", () -> {
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.setFetchSize(3);
                List<Object> got = rows(st.executeQuery("select g from generate_series(1, 10) g"));
                c.commit();
                return got;
            } finally {
                c.setAutoCommit(true);
            }
        });

        // two result sets read in parts at once (named portals), in one transaction
        step("two_portals", () -> {
            c.setAutoCommit(false);
            try (Statement a = c.createStatement(); Statement b = c.createStatement()) {
                a.setFetchSize(2);
                b.setFetchSize(3);
                ResultSet ra = a.executeQuery("select g from generate_series(1, 5) g");
                ResultSet rb = b.executeQuery("select g * 10 from generate_series(1, 7) g");
                List<Object> got = new ArrayList<>();
                boolean more = true;
                while (more) {
                    more = false;
                    if (ra.next()) {
                        got.add(ra.getInt(1));
                        more = true;
                    }
                    if (rb.next()) {
                        got.add(rb.getInt(1));
                        more = true;
                    }
                }
                c.commit();
                return got;
            } finally {
                c.setAutoCommit(true);
            }
        });

        // eight connections at once (more than Pake's pool has servers): named statements,
        // batches with an error now and then, transactions; the totals are deterministic
        step("concurrent", () -> {
            exec(c, "create table " + prefix + "_c (w int, i int, primary key (w, i))");
            List<Thread> threads = new ArrayList<>();
            List<Object> errors = java.util.Collections.synchronizedList(new ArrayList<>());
            for (int w = 0; w < 8; w++) {
                final int worker = w;
                threads.add(new Thread(() -> {
                    try (Connection k = connect(db, "prepareThreshold=" + (worker % 3))) {
                        PreparedStatement ins = k.prepareStatement("insert into " + prefix + "_c values (?, ?)");
                        for (int i = 0; i < 40; i++) {
                            k.setAutoCommit(i % 2 == 0);
                            ins.setInt(1, worker);
                            ins.setInt(2, i);
                            ins.addBatch();
                            ins.setInt(1, worker);
                            ins.setInt(2, i % 10 == 9 ? i : 1000 + i); // a duplicate every 10th
                            ins.addBatch();
                            try {
                                ins.executeBatch();
                            } catch (BatchUpdateException e) {
                                if (!k.getAutoCommit()) {
                                    k.rollback();
                                }
                                continue;
                            }
                            if (!k.getAutoCommit()) {
                                k.commit();
                            }
                        }
                    } catch (Exception e) {
                        errors.add(e.toString());
                    }
                }));
            }
            threads.forEach(Thread::start);
            for (Thread th : threads) {
                th.join();
            }
            List<Object> got = new ArrayList<>(errors);
            got.add(query(c, "select w, count(*) from " + prefix + "_c group by w order by w"));
            exec(c, "drop table " + prefix + "_c");
            return got;
        });

        // transactions and savepoints
        step("savepoints", () -> {
            c.setAutoCommit(false);
            try {
                exec(c, "insert into " + u + " values (400, 's')");
                Savepoint sp = c.setSavepoint();
                exec(c, "insert into " + u + " values (401, 's')");
                c.rollback(sp);
                Savepoint named = c.setSavepoint("sp2");
                exec(c, "insert into " + u + " values (402, 's')");
                c.releaseSavepoint(named);
                Savepoint sp3 = c.setSavepoint();
                List<Object> got = new ArrayList<>();
                try {
                    exec(c, "insert into " + u + " values (400, 'dup')");
                } catch (SQLException e) {
                    got.add(sqlState(e));
                    c.rollback(sp3);
                }
                c.commit();
                got.add(query(c, "select a from " + u + " where a >= 400 order by a"));
                return got;
            } finally {
                c.setAutoCommit(true);
            }
        });
        step("rollback", () -> {
            c.setAutoCommit(false);
            try {
                exec(c, "insert into " + u + " values (500, 'r')");
                c.rollback();
                return one(c, "select count(*) from " + u + " where a = 500");
            } finally {
                c.commit();
                c.setAutoCommit(true);
            }
        });
        step("error_in_transaction", () -> {
            c.setAutoCommit(false);
            List<Object> got = new ArrayList<>();
            try {
                try {
                    one(c, "select 1/0");
                } catch (SQLException e) {
                    got.add(sqlState(e));
                }
                try {
                    one(c, "select 1");
                } catch (SQLException e) {
                    got.add(sqlState(e));
                }
                c.rollback();
                got.add(one(c, "select 2"));
                c.commit();
                return got;
            } finally {
                c.setAutoCommit(true);
            }
        });

        // cancel from another thread, and a query timeout (pgjdbc cancels after the time). The
        // server drops a cancel that lands between statements: the cancel is sent once the
        // statement runs (a fixed delay raced a loaded machine), and the sleep is long enough
        // for a slow cancel to land inside it
        step("cancel", () -> {
            String sleep = "select pg_sleep(60) /* " + prefix + " cancel */";
            try (Statement st = c.createStatement()) {
                new Thread(() -> {
                    try (Connection w = connect(db);
                            PreparedStatement running = w.prepareStatement("select count(*) from pg_stat_activity"
                                    + " where state = 'active' and query = ?")) {
                        running.setString(1, sleep);
                        for (int i = 0; i < 600; i++) {
                            try (ResultSet rs = running.executeQuery()) {
                                rs.next();
                                if (rs.getLong(1) > 0) {
                                    break;
                                }
                            }
                            Thread.sleep(50);
                        }
                        st.cancel();
                    } catch (Exception e) {
                        // the step's result shows the cancel did not arrive
                    }
                }).start();
                return rows(st.executeQuery(sleep));
            }
        });
        step("after_cancel", () -> one(c, "select 1"));
        step("query_timeout", () -> {
            try (PreparedStatement st = c.prepareStatement("select pg_sleep(?)")) {
                st.setQueryTimeout(1);
                st.setInt(1, 5);
                return rows(st.executeQuery());
            }
        });
        step("after_query_timeout", () -> one(c, "select 2"));

        // a query timeout while the statement waits for a server: other connections hold
        // transactions open on every server of Pake's pool (25: more than it has)
        step("timeout_while_queued", () -> {
            Connection q = connect(db);
            one(q, "select 1"); // logged in before the servers are taken
            int holders = 25;
            java.util.concurrent.CountDownLatch holding = new java.util.concurrent.CountDownLatch(holders);
            java.util.concurrent.CountDownLatch done = new java.util.concurrent.CountDownLatch(1);
            List<Thread> threads = new ArrayList<>();
            for (int i = 0; i < holders; i++) {
                threads.add(new Thread(() -> {
                    try (Connection h = connect(db)) {
                        h.setAutoCommit(false);
                        one(h, "select 1");
                        holding.countDown();
                        done.await(10, java.util.concurrent.TimeUnit.SECONDS);
                        h.commit();
                    } catch (Exception e) {
                        holding.countDown();
                    }
                }));
            }
            threads.forEach(Thread::start);
            holding.await(2, java.util.concurrent.TimeUnit.SECONDS); // the rest wait for servers
            List<Object> got = new ArrayList<>();
            try (q) {
                long t0 = System.currentTimeMillis();
                try (PreparedStatement st = q.prepareStatement("select pg_sleep(?)")) {
                    st.setQueryTimeout(1);
                    st.setDouble(1, 2.5);
                    got.add(rows(st.executeQuery()));
                } catch (SQLException e) {
                    got.add(sqlState(e));
                }
                got.add(System.currentTimeMillis() - t0 < 2500 ? "within the timeout" : "late");
                done.countDown();
                for (Thread th : threads) {
                    th.join();
                }
                got.add(one(q, "select 4"));
            }
            return got;
        });
        // session settings survive later transactions
        step("session_set", () -> {
            exec(c, "set search_path = " + prefix + "_none, public");
            exec(c, "set statement_timeout = '12s'");
            exec(c, "set application_name = 'jdbc-" + prefix + "'");
            List<Object> got = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                c.setAutoCommit(false);
                got.add(Arrays.asList(one(c, "show search_path").toString().replace(prefix, "P"),
                        one(c, "show statement_timeout"),
                        one(c, "select current_setting('application_name')").toString().replace(prefix, "P")));
                c.commit();
                c.setAutoCommit(true);
            }
            exec(c, "reset statement_timeout");
            got.add(one(c, "show statement_timeout"));
            return got;
        });
        // the driver's own setters: setSchema (SET SESSION search_path), setClientInfo
        // (SET application_name), and startup parameters from connection properties
        step("driver_settings", () -> {
            exec(c, "create schema if not exists " + prefix + "_s");
            List<Object> got = new ArrayList<>();
            c.setSchema(prefix + "_s");
            c.setClientInfo("ApplicationName", "info-" + prefix);
            for (int i = 0; i < 2; i++) {
                c.setAutoCommit(false);
                got.add(c.getSchema().replace(prefix, "P"));
                got.add(c.getClientInfo("ApplicationName").replace(prefix, "P"));
                got.add(one(c, "show application_name").toString().replace(prefix, "P"));
                c.commit();
                c.setAutoCommit(true);
            }
            c.setSchema("public");
            got.add(c.getSchema());
            exec(c, "drop schema " + prefix + "_s");
            try (Connection o = connect(db, "ApplicationName=props-app", "options=-c statement_timeout=7s -c work_mem=3MB")) {
                for (int i = 0; i < 2; i++) {
                    o.setAutoCommit(false);
                    got.add(query(o, "select current_setting('application_name'), current_setting('statement_timeout'),"
                            + " current_setting('work_mem')"));
                    o.commit();
                }
            }
            return got;
        });
        step("session_characteristics", () -> {
            exec(c, "set session characteristics as transaction isolation level serializable");
            List<Object> got = new ArrayList<>();
            c.setAutoCommit(false);
            got.add(one(c, "show transaction_isolation"));
            c.commit();
            c.setAutoCommit(true);
            got.add(c.getTransactionIsolation());
            got.add(one(c, "show default_transaction_isolation"));
            return got;
        });
        step("set_transaction_isolation", () -> {
            List<Object> got = new ArrayList<>();
            c.setTransactionIsolation(Connection.TRANSACTION_REPEATABLE_READ);
            got.add(c.getTransactionIsolation());
            for (int i = 0; i < 2; i++) {
                c.setAutoCommit(false);
                got.add(one(c, "show transaction_isolation"));
                c.commit();
                c.setAutoCommit(true);
            }
            c.setTransactionIsolation(Connection.TRANSACTION_READ_COMMITTED);
            got.add(one(c, "show transaction_isolation"));
            return got;
        });
        step("set_read_only_transaction", () -> {
            List<Object> got = new ArrayList<>();
            c.setReadOnly(true);
            c.setAutoCommit(false);
            got.add(one(c, "show transaction_read_only"));
            try {
                exec(c, "insert into " + u + " values (600, 'ro')");
                got.add("written");
            } catch (SQLException e) {
                got.add(sqlState(e));
            }
            c.rollback();
            c.setAutoCommit(true);
            c.setReadOnly(false);
            got.add(one(c, "show transaction_read_only"));
            return got;
        });
        step("set_read_only_always", () -> {
            try (Connection r = connect(db, "readOnlyMode=always")) {
                List<Object> got = new ArrayList<>();
                r.setReadOnly(true);
                for (int i = 0; i < 2; i++) {
                    got.add(one(r, "show transaction_read_only"));
                    try {
                        exec(r, "insert into " + u + " values (601, 'ro')");
                        got.add("written");
                    } catch (SQLException e) {
                        got.add(sqlState(e));
                    }
                }
                r.setReadOnly(false);
                got.add(one(r, "show default_transaction_read_only"));
                return got;
            }
        });
        step("simple_query_mode", () -> {
            try (Connection s = connect(db, "preferQueryMode=simple")) {
                exec(s, "set work_mem = '5MB'");
                List<Object> got = new ArrayList<>();
                try (PreparedStatement ps = s.prepareStatement("select ?::int * 2, current_setting('work_mem')")) {
                    ps.setInt(1, 21);
                    got.add(rows(ps.executeQuery()));
                }
                s.setAutoCommit(false);
                got.add(one(s, "show work_mem"));
                s.commit();
                return got;
            }
        });

        // autosave=always: a savepoint before each statement of a transaction, rolled back to
        // when one fails; a SET made earlier in the transaction stays, as do its rows
        step("autosave_settings", () -> {
            try (Connection a = connect(db, "autosave=always")) {
                List<Object> got = new ArrayList<>();
                a.setAutoCommit(false);
                exec(a, "set work_mem = '9MB'");
                exec(a, "insert into " + u + " values (800, 'as')");
                try {
                    one(a, "select 1/0");
                } catch (SQLException e) {
                    got.add(sqlState(e));
                }
                exec(a, "insert into " + u + " values (801, 'as')");
                a.commit();
                for (int i = 0; i < 2; i++) {
                    got.add(one(a, "show work_mem"));
                    a.commit();
                }
                got.add(one(a, "select count(*) from " + u + " where a in (800, 801)"));
                a.commit();
                return got;
            }
        });
        // a connection closed in the middle of a transaction: nothing of it is kept
        step("close_in_transaction", () -> {
            try (Connection a = connect(db)) {
                a.setAutoCommit(false);
                exec(a, "insert into " + u + " values (900, 'closed')");
            }
            return one(c, "select count(*) from " + u + " where a = 900");
        });
        // session advisory locks, WITH HOLD cursors and SQL PREPARE outlive their transaction
        step("advisory_lock", () -> {
            try (Connection other = connect(db)) {
                long key = 4242;
                List<Object> got = new ArrayList<>();
                got.add(one(c, "select pg_try_advisory_lock(" + key + ")"));
                c.setAutoCommit(false);
                got.add(one(c, "select count(*) from pg_locks where locktype = 'advisory' and objid = " + key
                        + " and pid = pg_backend_pid()"));
                c.commit();
                c.setAutoCommit(true);
                got.add(one(other, "select pg_try_advisory_lock(" + key + ")"));
                got.add(one(c, "select pg_advisory_unlock(" + key + ")"));
                got.add(one(other, "select pg_try_advisory_lock(" + key + ")"));
                got.add(one(other, "select pg_advisory_unlock(" + key + ")"));
                return got;
            }
        });
        step("with_hold_cursor", () -> {
            c.setAutoCommit(false);
            exec(c, "declare " + prefix + "_cur cursor with hold for select g from generate_series(1, 5) g");
            c.commit();
            c.setAutoCommit(true);
            List<Object> got = new ArrayList<>();
            got.add(query(c, "fetch 2 from " + prefix + "_cur"));
            got.add(query(c, "fetch 2 from " + prefix + "_cur"));
            exec(c, "close " + prefix + "_cur");
            return got;
        });
        step("sql_prepare", () -> {
            exec(c, "prepare " + prefix + "_q(int) as select $1 * 5");
            List<Object> got = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                got.add(one(c, "execute " + prefix + "_q(" + i + ")"));
            }
            exec(c, "deallocate " + prefix + "_q");
            return got;
        });

        // every statement server-prepared (extendedCacheEverything, prepareThreshold=1):
        // SET, SHOW, savepoints and the driver's own BEGIN as named statements
        step("cache_everything", () -> {
            try (Connection e = connect(db, "preferQueryMode=extendedCacheEverything", "prepareThreshold=1",
                    "autosave=always")) {
                List<Object> got = new ArrayList<>();
                for (int i = 0; i < 3; i++) {
                    exec(e, "set work_mem = '" + (i + 5) + "MB'");
                    e.setAutoCommit(false);
                    got.add(one(e, "show work_mem"));
                    try {
                        one(e, "select 1/0");
                    } catch (SQLException x) {
                        got.add(sqlState(x));
                    }
                    exec(e, "set statement_timeout = '" + (i + 1) + "s'");
                    e.commit();
                    e.setAutoCommit(true);
                    got.add(one(e, "show statement_timeout"));
                }
                got.add(one(e, "show work_mem"));
                return got;
            }
        });
        // connection properties a Java application sets: currentSchema (a search_path
        // startup parameter), stringtype=unspecified (untyped parameters),
        // targetServerType=primary (the driver asks the server whether it is read-only)
        step("connection_properties", () -> {
            try (Connection e = connect(db, "currentSchema=pg_catalog,public", "stringtype=unspecified",
                    "targetServerType=primary")) {
                List<Object> got = new ArrayList<>();
                for (int i = 0; i < 2; i++) {
                    e.setAutoCommit(false);
                    got.add(one(e, "show search_path"));
                    e.commit();
                    e.setAutoCommit(true);
                }
                try (PreparedStatement ps = e.prepareStatement("select ? + 1, ?::date + 1")) {
                    ps.setString(1, "41");
                    ps.setString(2, "2026-01-31");
                    got.add(rows(ps.executeQuery()));
                }
                return got;
            }
        });
        // an enum type (the driver looks the type up), setObject with Types.OTHER, maxRows
        step("custom_type", () -> {
            String ty = prefix + "_mood";
            exec(c, "drop type if exists " + ty);
            exec(c, "create type " + ty + " as enum ('sad', 'ok', 'happy')");
            List<Object> got = new ArrayList<>();
            for (int i = 0; i < 6; i++) {
                try (PreparedStatement ps = c.prepareStatement("select ?::" + ty + ", array['ok'::" + ty + "]")) {
                    ps.setObject(1, "happy", java.sql.Types.OTHER);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        got.add(rs.getString(1) + " " + rs.getMetaData().getColumnTypeName(1).replace(prefix, "P")
                                + " " + Arrays.toString((Object[]) rs.getArray(2).getArray()));
                    }
                }
            }
            try (Statement st = c.createStatement()) {
                st.setMaxRows(3);
                got.add(rows(st.executeQuery("select g from generate_series(1, 10) g")));
            }
            exec(c, "drop type " + ty);
            return got;
        });

        // temp tables across transactions
        step("temp_table", () -> {
            exec(c, "create temp table " + tmp + " (a int)");
            List<Object> got = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                c.setAutoCommit(false);
                exec(c, "insert into " + tmp + " values (" + i + ")");
                c.commit();
                c.setAutoCommit(true);
                got.add(one(c, "select count(*) from " + tmp));
            }
            try (PreparedStatement ps = c.prepareStatement("select sum(a) from " + tmp + " where a >= ?")) {
                for (int i = 0; i < 6; i++) {
                    ps.setInt(1, 0);
                    got.add(rows(ps.executeQuery()));
                }
            }
            exec(c, "drop table " + tmp);
            return got;
        });

        // COPY both ways with CopyManager
        CopyManager copy = c.unwrap(PGConnection.class).getCopyAPI();
        step("copy_in", () -> {
            long n = copy.copyIn("copy " + u + " (a, s) from stdin",
                    new ByteArrayInputStream("700\tc1\n701\tc2\n702\t\\N\n".getBytes(StandardCharsets.UTF_8)));
            return Arrays.asList(n, one(c, "select count(*) from " + u + " where a >= 700"));
        });
        step("copy_out", () -> {
            ByteArrayOutputStream buf = new ByteArrayOutputStream();
            long n = copy.copyOut("copy (select a, s from " + u + " where a >= 700 order by a) to stdout with csv", buf);
            return Arrays.asList(n, buf.toString(StandardCharsets.UTF_8));
        });
        step("copy_in_error", () -> {
            List<Object> got = new ArrayList<>();
            try {
                copy.copyIn("copy " + u + " (a, s) from stdin",
                        new ByteArrayInputStream("703\tc\nnot a number\tc\n".getBytes(StandardCharsets.UTF_8)));
                got.add("copied");
            } catch (SQLException e) {
                got.add(sqlState(e));
            }
            got.add(one(c, "select count(*) from " + u + " where a >= 700"));
            return got;
        });

        // large objects (fastpath function calls), in a transaction
        step("large_object", () -> {
            c.setAutoCommit(false);
            try {
                LargeObjectManager lom = c.unwrap(PGConnection.class).getLargeObjectAPI();
                long oid = lom.createLO();
                LargeObject lo = lom.open(oid, LargeObjectManager.WRITE);
                lo.write("hello large object".getBytes(StandardCharsets.UTF_8));
                lo.close();
                c.commit();
                lo = lom.open(oid, LargeObjectManager.READ);
                lo.seek(6);
                String got = new String(lo.read(5), StandardCharsets.UTF_8);
                int size = lo.size();
                lo.close();
                lom.unlink(oid);
                c.commit();
                return Arrays.asList(got, size);
            } finally {
                c.setAutoCommit(true);
            }
        });

        // backend identity: the pid the driver was given is the one the server reports
        step("backend_pid", () -> {
            int given = c.unwrap(PGConnection.class).getBackendPID();
            List<Object> got = new ArrayList<>();
            got.add(((Number) one(c, "select pg_backend_pid()")).intValue() == given);
            c.setAutoCommit(false);
            got.add(((Number) one(c, "select pg_backend_pid()")).intValue() == given);
            c.commit();
            c.setAutoCommit(true);
            return got;
        });
        step("is_valid", () -> Arrays.asList(c.isValid(5), c.isValid(0), one(c, "select 3")));

        // metadata
        step("metadata", () -> {
            DatabaseMetaData md = c.getMetaData();
            List<Object> got = new ArrayList<>();
            got.add(md.getDatabaseProductName());
            got.add(md.getDatabaseMajorVersion());
            got.add(md.getUserName().equals(user));
            got.add(md.supportsSavepoints());
            try (ResultSet rs = md.getTables(null, "public", u, new String[] {"TABLE"})) {
                while (rs.next()) {
                    got.add(rs.getString("TABLE_NAME").replace(prefix, "P"));
                }
            }
            try (ResultSet rs = md.getColumns(null, "public", u, null)) {
                while (rs.next()) {
                    got.add(rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME") + " " + rs.getInt("DATA_TYPE"));
                }
            }
            try (ResultSet rs = md.getPrimaryKeys(null, "public", u)) {
                while (rs.next()) {
                    got.add("pk " + rs.getString("COLUMN_NAME"));
                }
            }
            try (ResultSet rs = md.getTypeInfo()) {
                int n = 0;
                while (rs.next()) {
                    n += rs.getString("TYPE_NAME").equals("int4") ? 1 : 0;
                }
                got.add(n);
            }
            return got;
        });

        // a database created at run time, connected to at once
        String newDb = prefix + "_db";
        step("new_database", () -> {
            exec(c, "drop database if exists " + newDb);
            exec(c, "create database " + newDb);
            List<Object> got = new ArrayList<>();
            try (Connection n = connect(newDb)) {
                exec(n, "create table x (a int)");
                exec(n, "insert into x values (1)");
                got.add(one(n, "select current_database()").toString().replace(prefix, "P"));
                got.add(one(n, "select count(*) from x"));
            }
            exec(c, "drop database " + newDb);
            got.add(one(c, "select count(*) from pg_database where datname = '" + newDb + "'"));
            return got;
        });

        // LISTEN/NOTIFY: notifications arrive through getNotifications, naming their sender
        String ch = prefix + "_ch";
        step("listen_notify", () -> {
            try (Connection l = connect(db); Connection n = connect(db)) {
                exec(l, "listen " + ch);
                exec(n, "notify " + ch + ", 'one'");
                try (PreparedStatement ps = n.prepareStatement("select pg_notify(?, ?)")) {
                    ps.setString(1, ch);
                    ps.setString(2, "two");
                    ps.execute();
                }
                exec(l, "notify " + ch + ", 'self'");
                int sender = n.unwrap(PGConnection.class).getBackendPID();
                int self = l.unwrap(PGConnection.class).getBackendPID();
                List<Object> got = new ArrayList<>();
                long until = System.currentTimeMillis() + 10_000;
                while (got.size() < 3 && System.currentTimeMillis() < until) {
                    PGNotification[] ns = l.unwrap(PGConnection.class).getNotifications(500);
                    for (PGNotification m : ns == null ? new PGNotification[0] : ns) {
                        String from = m.getPID() == sender ? "other" : m.getPID() == self ? "self" : "unknown";
                        got.add(Arrays.asList(m.getName().replace(prefix, "P"), m.getParameter(), from));
                    }
                }
                exec(l, "unlisten " + ch);
                exec(n, "notify " + ch + ", 'after unlisten'");
                PGNotification[] late = l.unwrap(PGConnection.class).getNotifications(300);
                got.add(late == null ? 0 : late.length);
                return got;
            }
        });

        // LISTEN inside a transaction goes to a server (the client is pinned to it)
        step("listen_in_transaction", () -> {
            try (Connection l = connect(db); Connection n = connect(db)) {
                l.setAutoCommit(false);
                exec(l, "listen " + ch + "_tx");
                l.commit();
                l.setAutoCommit(true);
                exec(n, "notify " + ch + "_tx, 'in tx'");
                List<Object> got = new ArrayList<>();
                long until = System.currentTimeMillis() + 10_000;
                while (got.isEmpty() && System.currentTimeMillis() < until) {
                    PGNotification[] ns = l.unwrap(PGConnection.class).getNotifications(500);
                    for (PGNotification m : ns == null ? new PGNotification[0] : ns) {
                        got.add(Arrays.asList(m.getName().replace(prefix, "P"), m.getParameter()));
                    }
                }
                exec(l, "unlisten *");
                got.add(one(l, "select count(*) from pg_listening_channels()"));
                return got;
            }
        });
        // the JVM's time zone is the session's (a TimeZone startup parameter)
        step("time_zone", () -> {
            java.util.TimeZone saved = java.util.TimeZone.getDefault();
            java.util.TimeZone.setDefault(java.util.TimeZone.getTimeZone("America/New_York"));
            try (Connection z = connect(db)) {
                List<Object> got = new ArrayList<>();
                for (int i = 0; i < 2; i++) {
                    z.setAutoCommit(false);
                    got.add(one(z, "show timezone"));
                    got.add(one(z, "select '2026-07-01 12:00:00+00'::timestamptz::text"));
                    try (PreparedStatement ps = z.prepareStatement("select ?::timestamptz::text")) {
                        ps.setTimestamp(1, java.sql.Timestamp.valueOf("2026-01-02 03:04:05"));
                        got.add(rows(ps.executeQuery()));
                    }
                    z.commit();
                }
                return got;
            } finally {
                java.util.TimeZone.setDefault(saved);
            }
        });
        // a large value both ways (8 MiB bytea, binary transfer)
        step("large_value", () -> {
            try (Connection b = connect(db, "prepareThreshold=-1")) {
                byte[] big = new byte[8 << 20];
                for (int i = 0; i < big.length; i++) {
                    big[i] = (byte) (i * 31 + (i >> 13));
                }
                try (PreparedStatement ps = b.prepareStatement("select ?::bytea, length(?::bytea), md5(?::bytea)")) {
                    ps.setBytes(1, big);
                    ps.setBytes(2, big);
                    ps.setBytes(3, big);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        return Arrays.asList(Arrays.equals(rs.getBytes(1), big), rs.getInt(2), rs.getString(3));
                    }
                }
            }
        });

        kept.close();
        exec(c, "drop table " + t + ", " + u);
        c.close();
        System.out.println(json(out));
    }

    static String json(Object v) {
        if (v == null) {
            return "null";
        }
        if (v instanceof Number || v instanceof Boolean) {
            return v.toString();
        }
        if (v instanceof Map) {
            StringBuilder b = new StringBuilder("{");
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                b.append(b.length() > 1 ? "," : "").append(json(e.getKey().toString())).append(':').append(json(e.getValue()));
            }
            return b.append('}').toString();
        }
        if (v instanceof List) {
            StringBuilder b = new StringBuilder("[");
            for (Object x : (List<?>) v) {
                b.append(b.length() > 1 ? "," : "").append(json(x));
            }
            return b.append(']').toString();
        }
        StringBuilder b = new StringBuilder("\"");
        for (char ch : v.toString().toCharArray()) {
            if (ch == '"' || ch == '\\') {
                b.append('\\').append(ch);
            } else if (ch < 0x20) {
                b.append(String.format("\\u%04x", (int) ch));
            } else {
                b.append(ch);
            }
        }
        return b.append('"').toString();
    }
}
