/* Who may use the agent's control socket: a process running as the agent's own uid, or
 * one whose user belongs to control_group. The socket file's mode (agent.c) keeps others
 * from connecting at all; this check refuses them even where the file is reachable (a
 * loose mode, a process that can bypass file permissions), with a typed E_DENIED reply and
 * a log line. Not here: what a command does (control.c and the modules it dispatches to).
 *
 * The credentials are the kernel's (SO_PEERCRED, taken by libzmq when it accepts the
 * connection) and arrive on every message as its "Peer-Address" property, which for ipc://
 * is "HOST:UID:GID:PID". Unlike ZMQ_IPC_FILTER_UID/GID, which close a refused connection
 * without a word, this lets the agent answer. */
#include "agent.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"

#define MAX_GROUPS 1024
/* ZMQ_MSG_PROPERTY_PEER_ADDRESS, which zmq.h declares only in its draft API. */
#define PEER_ADDRESS "Peer-Address"

typedef struct {
    long uid, gid, pid;
} peer_cred;

/* The last three ':'-separated decimal fields of a Peer-Address: 0, or -1 if it has none
 * (a transport without credentials, or a libzmq that does not add them). */
static int parse_peer(const char *addr, peer_cred *p)
{
    long *field[3] = {&p->pid, &p->gid, &p->uid};
    const char *end = addr + strlen(addr);
    for (int i = 0; i < 3; i++) {
        const char *colon = end;
        while (colon > addr && colon[-1] != ':')
            colon--;
        if (colon == addr || colon == end)
            return -1;
        char *stop = NULL;
        errno = 0;
        long v = strtol(colon, &stop, 10);
        if (errno || stop != end || v < 0 || *colon == '-' || *colon == '+')
            return -1;
        *field[i] = v;
        end = colon - 1;
    }
    return 0;
}

/* Is the peer in group want: its effective gid, or its user's groups (the /etc/group or
 * NSS membership that login and service managers give the user's processes)? */
static int in_group(const peer_cred *p, gid_t want)
{
    struct passwd pw, *found = NULL;
    char buf[16384];
    gid_t groups[MAX_GROUPS];
    int n = MAX_GROUPS;
    if ((gid_t)p->gid == want)
        return 1;
    if (getpwuid_r((uid_t)p->uid, &pw, buf, sizeof buf, &found) != 0 || !found)
        return 0;
    if (found->pw_gid == want)
        return 1;
    if (getgrouplist(found->pw_name, found->pw_gid, groups, &n) < 0)
        n = MAX_GROUPS; /* more than we hold: those we got still count */
    for (int i = 0; i < n; i++)
        if (groups[i] == want)
            return 1;
    return 0;
}

int control_guard_admit(agent *a, const void *req, const uint8_t *rid, size_t rid_len)
{
    const char *addr = zmq_msg_gets((const zmq_msg_t *)req, PEER_ADDRESS);
    peer_cred p = {-1, -1, -1};
    if (addr && parse_peer(addr, &p) == 0) {
        if ((uid_t)p.uid == geteuid() ||
            (a->control_gid >= 0 && in_group(&p, (gid_t)a->control_gid)))
            return 1;
        refex_log_warn("control: refused a request from uid %ld gid %ld pid %ld: not this "
                       "agent's user%s",
                       p.uid, p.gid, p.pid,
                       a->control_gid >= 0 ? " nor a member of control_group" : "");
    } else {
        refex_log_warn("control: refused a request from a peer whose credentials are unknown");
    }
    batch_reply(a, rid, rid_len, control_error(REFEX_E_DENIED, NULL));
    return 0;
}
