/* A Modbus slave built on libmodbus (not pymodbus), for tests on loopback.
 *
 *   modbus_slave LOG tcp PORT UNIT [MAP...]
 *   modbus_slave LOG rtu DEVICE BAUD PARITY UNIT [MAP...]
 *
 * MAP is SPACE:ADDRESS=V,V,... with SPACE one of hr ir co di (values in
 * decimal or 0x hex). Each space holds 1000 registers or 2000 bits; reads
 * beyond answer with exception 2. In RTU mode libmodbus ignores a frame for
 * another unit id and then the frame after it too (it takes that for the other
 * unit's answer), so this slave is one unit alone on its line. Prints
 * "ready PORT" on stdout once
 * listening; appends one line "UNIT FC ADDRESS COUNT" to LOG per request.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <modbus.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void load_map(modbus_mapping_t *map, const char *arg) {
    char space[3] = {0};
    unsigned address;
    int used = 0;
    if (sscanf(arg, "%2[a-z]:%u=%n", space, &address, &used) != 2 || used == 0) {
        fprintf(stderr, "bad map %s\n", arg);
        exit(2);
    }
    char *copy = strdup(arg + used);
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ","), address++) {
        unsigned long v = strtoul(tok, NULL, 0);
        if (!strcmp(space, "hr")) map->tab_registers[address] = (uint16_t)v;
        else if (!strcmp(space, "ir")) map->tab_input_registers[address] = (uint16_t)v;
        else if (!strcmp(space, "co")) map->tab_bits[address] = v ? 1 : 0;
        else if (!strcmp(space, "di")) map->tab_input_bits[address] = v ? 1 : 0;
        else { fprintf(stderr, "bad space %s\n", space); exit(2); }
    }
    free(copy);
}

static void log_request(FILE *log, modbus_t *ctx, const uint8_t *q) {
    int h = modbus_get_header_length(ctx);
    fprintf(log, "%d %d %d %d\n", q[h - 1], q[h], (q[h + 1] << 8) | q[h + 2],
            (q[h + 3] << 8) | q[h + 4]);
    fflush(log);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: see the comment at the top of modbus_slave.c\n");
        return 2;
    }
    FILE *log = fopen(argv[1], "a");
    int tcp = !strcmp(argv[2], "tcp");
    int first_map = tcp ? 5 : 7;
    if (!log || argc < first_map) return 2;
    int unit = atoi(argv[first_map - 1]);
    modbus_t *ctx = tcp ? modbus_new_tcp("127.0.0.1", atoi(argv[3]))
                        : modbus_new_rtu(argv[3], atoi(argv[4]), argv[5][0], 8, 1);
    modbus_mapping_t *map = modbus_mapping_new(2000, 2000, 1000, 1000);
    if (!ctx || !map) return 1;
    modbus_set_slave(ctx, unit);
    modbus_set_debug(ctx, getenv("MODBUS_SLAVE_DEBUG") != NULL);
    for (int i = first_map; i < argc; i++) load_map(map, argv[i]);

    uint8_t q[MODBUS_MAX_ADU_LENGTH];
    int server = -1;
    if (tcp) {
        server = modbus_tcp_listen(ctx, 1);
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        if (server < 0 || getsockname(server, (struct sockaddr *)&sa, &len) < 0) return 1;
        printf("ready %d\n", ntohs(sa.sin_port));
    } else {
        if (modbus_connect(ctx) < 0) return 1;
        printf("ready 0\n");
    }
    fflush(stdout);
    for (;;) {
        if (tcp && modbus_tcp_accept(ctx, &server) < 0) return 1;
        for (;;) {
            int rc = modbus_receive(ctx, q);
            if (rc > 0) {
                log_request(log, ctx, q);
                modbus_reply(ctx, q, rc, map);
            } else if (rc < 0 && (tcp || errno == EBADF)) {
                break; /* the client left (tcp: accept the next one) */
            }
        }
        if (!tcp) return 1;
        close(modbus_get_socket(ctx));
    }
}
