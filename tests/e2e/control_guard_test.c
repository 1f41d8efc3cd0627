/* The guarded control socket (issue 9, item 6), end to end with a real broker and agent
 * started under umask 000: control.sock is 0660 and every database (and its -wal/-shm)
 * 0600 all the same; a process of another uid that can reach the socket (the test opens it
 * to everyone: the attacker-has-access case) is refused with E_DENIED and a log line naming
 * its uid, gid and pid, while the agent keeps serving its own user; one kept out by the
 * file modes gets E_DENIED from librefex-client; an unknown control_group stops the agent
 * at start with E_CONFIG; a database left with a loose mode is tightened at start; and with
 * control_group set, a member of that group is served and a non-member still refused. Needs root
 * (to become other uids); skipped otherwise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../unit/testing.h"
#include "harness.h"
#include "refex/client.h"

#define AGENCY     "midwifery"
#define NOBODY     65534 /* nobody, and nogroup: an existing group, none created */
#define STRANGER   65533 /* a uid and gid with no account at all */
#define CHILD_WAIT 10000

static h_net g_net;
static const char *const AGENCIES[] = {AGENCY, NULL};

static int setup(void **state)
{
    (void)state;
    umask(0); /* the daemons inherit it: their modes must not depend on it */
    return h_net_up(&g_net, AGENCIES, NULL, NULL);
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

static unsigned mode_of(const char *path, gid_t *gid)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        fail_msg("%s: cannot stat", path);
    if (gid)
        *gid = st.st_gid;
    return (unsigned)(st.st_mode & 07777);
}

static void sock_path(char *buf, size_t len)
{
    h_path(&g_net, buf, len, "data/%s/control.sock", AGENCY);
}

/* What the harness creates is as loose as umask 000 makes it, and the agent runs under it. */
static void test_umask_reaches_the_daemons(void **state)
{
    (void)state;
    char path[700], line[256];
    int found = 0;
    h_path(&g_net, path, sizeof path, "conf/broker.conf");
    assert_int_equal(mode_of(path, NULL), 0666);
    snprintf(path, sizeof path, "/proc/%d/status", (int)g_net.agents[0].pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Umask:", 6) == 0)
            found = strtol(line + 6, NULL, 8) == 0 ? 1 : -1;
    fclose(f);
    assert_int_equal(found, 1);
}

/* Every SQLite file under data/<who>: 0600; returns how many databases there were. */
static int check_databases(const char *who)
{
    char dir[700], path[1200];
    int dbs = 0;
    h_path(&g_net, dir, sizeof dir, "data/%s", who);
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) {
        const char *dot = strstr(e->d_name, ".db");
        if (!dot || (dot[3] && strcmp(dot + 3, "-wal") && strcmp(dot + 3, "-shm") &&
                     strcmp(dot + 3, "-journal")))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (mode_of(path, NULL) != 0600)
            fail_msg("%s is mode %03o, not 0600", path, mode_of(path, NULL));
        dbs += dot[3] == 0;
    }
    closedir(d);
    return dbs;
}

static void test_modes_under_umask_000(void **state)
{
    (void)state;
    char path[700];
    struct stat st;
    sock_path(path, sizeof path);
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(mode_of(path, NULL), 0660);
    h_path(&g_net, path, sizeof path, "data/%s/agent.db", AGENCY);
    assert_int_equal(mode_of(path, NULL), 0600);
    h_path(&g_net, path, sizeof path, "data/broker/queue.db");
    assert_int_equal(mode_of(path, NULL), 0600);
    assert_true(check_databases(AGENCY) >= 1);
    assert_true(check_databases("broker") >= 1);
}

/* Runs `status` through librefex-client as uid:gid (no supplementary groups); returns the
 * call's code, its error text in err and the child's pid in pid. */
static int status_as(uid_t uid, gid_t gid, char *err, size_t errlen, pid_t *pid)
{
    int fds[2], status = 0;
    char path[700];
    sock_path(path, sizeof path);
    assert_int_equal(pipe(fds), 0);
    *pid = fork();
    assert_true(*pid >= 0);
    if (*pid == 0) {
        close(fds[0]);
        if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
            _exit(200);
        refex_client *c = NULL;
        int rc = refex_client_open_socket(path, &c);
        if (rc == REFEX_OK && (rc = refex_client_set_timeout(c, CHILD_WAIT)) == REFEX_OK) {
            char *reply = NULL;
            rc = refex_client_request(c, "{\"cmd\":\"status\"}", &reply);
            refex_client_free(reply);
        }
        const char *msg = refex_client_error(c);
        if (write(fds[1], msg, strlen(msg)) < 0)
            rc = 201;
        refex_client_close(&c);
        _exit(rc);
    }
    close(fds[1]);
    ssize_t n = read(fds[0], err, errlen - 1);
    err[n > 0 ? n : 0] = 0;
    close(fds[0]);
    assert_int_equal(waitpid(*pid, &status, 0), *pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* Runs the refex CLI as uid:gid with args (after -c AGENCY's config); its exit code, and
 * its stdout and stderr in out. */
static int cli_as(uid_t uid, gid_t gid, const char *const *args, char *out, size_t outlen)
{
    int fds[2], status = 0;
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
            _exit(200);
        char text[4096];
        int rc = h_cli_agent(&g_net, AGENCY, text, sizeof text, args);
        if (write(fds[1], text, strlen(text)) < 0)
            rc = 201;
        _exit(rc < 0 ? 202 : rc);
    }
    close(fds[1]);
    ssize_t n = read(fds[0], out, outlen - 1);
    out[n > 0 ? n : 0] = 0;
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* The CLI as another uid: one JSON error object under --json, exit 1 (refused), not 3 (no
 * agent). */
static void expect_cli_denied(void)
{
    char out[4096];
    const char *args[] = {"status", "--json", NULL};
    int cli_rc = cli_as(NOBODY, NOBODY, args, out, sizeof out);
    if (cli_rc != 1)
        fail_msg("refex status as another uid: exit %d: %s", cli_rc, out);
    assert_non_null(strstr(out, "\"error\": \"E_DENIED\""));
}

/* The attacker-has-access case: every directory on the way and the socket open to all. */
static void open_to_everyone(void)
{
    char path[700];
    assert_int_equal(chmod(g_net.root, 0711), 0);
    h_path(&g_net, path, sizeof path, "data");
    assert_int_equal(chmod(path, 0711), 0);
    h_path(&g_net, path, sizeof path, "data/%s", AGENCY);
    assert_int_equal(chmod(path, 0711), 0);
    sock_path(path, sizeof path);
    assert_int_equal(chmod(path, 0666), 0);
    /* the CLI reads the agent's config for its data_dir (the file is 0666 under umask 000) */
    h_path(&g_net, path, sizeof path, "conf");
    assert_int_equal(chmod(path, 0711), 0);
}

static void expect_logged_refusal(uid_t uid, gid_t gid, pid_t pid)
{
    char log[700], needle[200];
    h_path(&g_net, log, sizeof log, "logs/%s.log", AGENCY);
    snprintf(needle, sizeof needle, "control: refused a request from uid %u gid %u pid %d",
             (unsigned)uid, (unsigned)gid, (int)pid);
    if (!h_tree_contains(log, needle, strlen(needle)))
        fail_msg("%s has no line '%s'", log, needle);
}

static void expect_own_user_served(void)
{
    json_t *req = json_pack("{s:s}", "cmd", "status");
    json_t *r = h_control(&g_net, AGENCY, req);
    json_decref(req);
    assert_non_null(r);
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    assert_true(h_alive(&g_net.agents[0]));
}

static void test_other_uid_refused(void **state)
{
    (void)state;
    char err[1200];
    pid_t pid;
    open_to_everyone();
    assert_int_equal(status_as(NOBODY, NOBODY, err, sizeof err, &pid), REFEX_E_DENIED);
    assert_non_null(strstr(err, "E_DENIED: not allowed to use this agent's control socket"));
    expect_logged_refusal(NOBODY, NOBODY, pid);
    expect_own_user_served();
    /* A second request from the same kind of peer is refused as well. */
    assert_int_equal(status_as(STRANGER, STRANGER, err, sizeof err, &pid), REFEX_E_DENIED);
    expect_logged_refusal(STRANGER, STRANGER, pid);
    expect_own_user_served();
    expect_cli_denied();
    expect_own_user_served();
}

/* With the socket back at 0660, the file mode keeps the other uid out before the agent
 * sees anything: librefex-client says so instead of timing out. */
static void test_file_mode_refusal(void **state)
{
    (void)state;
    char path[700], err[1200];
    pid_t pid;
    sock_path(path, sizeof path);
    assert_int_equal(chmod(path, 0660), 0);
    assert_int_equal(status_as(NOBODY, NOBODY, err, sizeof err, &pid), REFEX_E_DENIED);
    assert_non_null(strstr(err, "E_DENIED: no permission to use the agent's control socket"));
    assert_non_null(strstr(err, "control_group"));
    expect_cli_denied();
    expect_own_user_served();
}

static void write_conf(const char *path, const char *base, const char *extra)
{
    char text[4096];
    FILE *f = fopen(base, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%s%s\n", text, extra);
    assert_int_equal(fclose(f), 0);
}

static void test_unknown_group_is_config_error(void **state)
{
    (void)state;
    char base[700], conf[700], log[700], exe[1100];
    h_proc p;
    h_path(&g_net, base, sizeof base, "conf/%s.conf", AGENCY);
    h_path(&g_net, conf, sizeof conf, "conf/badgroup.conf");
    h_path(&g_net, log, sizeof log, "logs/badgroup.log");
    write_conf(conf, base, "control_group = refex-no-such-group");
    snprintf(exe, sizeof exe, "%s/refex-agent", g_net.bin);
    char *argv[] = {exe, "-n", "-c", conf, NULL};
    assert_int_equal(h_spawn(&p, "badgroup", argv, log), 0);
    assert_int_equal(h_wait_exit(&p, H_TIMEOUT_MS), 2);
    const char *needle = "config: control_group: no group named 'refex-no-such-group'";
    if (!h_tree_contains(log, needle, strlen(needle)))
        fail_msg("%s has no line '%s'", log, needle);
}

static void test_control_group_member_allowed(void **state)
{
    (void)state;
    char conf[700], path[700], err[1200];
    gid_t gid = 0;
    pid_t pid;
    struct group *gr = getgrgid(NOBODY);
    assert_non_null(gr);
    h_stop(&g_net.agents[0]);
    h_path(&g_net, conf, sizeof conf, "conf/%s.conf", AGENCY);
    char extra[128];
    snprintf(extra, sizeof extra, "control_group = %s", gr->gr_name);
    write_conf(conf, conf, extra);
    /* A database left with a loose mode (an older version, a copy) is tightened at start. */
    h_path(&g_net, path, sizeof path, "data/%s/agent.db", AGENCY);
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(h_net_start_agent(&g_net, AGENCY), 0);
    assert_int_equal(mode_of(path, NULL), 0600);
    h_path(&g_net, conf, sizeof conf, "logs/%s.log", AGENCY);
    const char *needle = "agent.db was mode 644; now 600";
    if (!h_tree_contains(conf, needle, strlen(needle)))
        fail_msg("%s has no line '%s'", conf, needle);

    sock_path(path, sizeof path);
    assert_int_equal(mode_of(path, &gid), 0660);
    assert_int_equal(gid, NOBODY);
    h_path(&g_net, path, sizeof path, "data/%s", AGENCY);
    assert_int_equal(mode_of(path, &gid), 0710);
    assert_int_equal(gid, NOBODY);
    /* The test tree itself is 0711 since test_other_uid_refused; nothing else is opened. */
    assert_int_equal(status_as(NOBODY, NOBODY, err, sizeof err, &pid), REFEX_OK);
    expect_own_user_served();

    /* A uid outside the group is still refused by the agent when it can reach the socket. */
    sock_path(path, sizeof path);
    assert_int_equal(chmod(path, 0666), 0);
    h_path(&g_net, path, sizeof path, "data/%s", AGENCY);
    assert_int_equal(chmod(path, 0711), 0);
    assert_int_equal(status_as(STRANGER, STRANGER, err, sizeof err, &pid), REFEX_E_DENIED);
    expect_logged_refusal(STRANGER, STRANGER, pid);
    expect_own_user_served();
}

int main(void)
{
    if (geteuid() != 0) {
        printf("SKIP: e2e_control_guard must run as root (it becomes other uids)\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_umask_reaches_the_daemons),
        cmocka_unit_test(test_modes_under_umask_000),
        cmocka_unit_test(test_other_uid_refused),
        cmocka_unit_test(test_file_mode_refusal),
        cmocka_unit_test(test_unknown_group_is_config_error),
        cmocka_unit_test(test_control_group_member_allowed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
