/*
 * sluice_devinfo — what a tenant sees: list the RDMA devices, open each, and
 * print the device, port 1 and GID 0 as the verbs API reports them.
 *
 * Uses only the public verbs API, so it runs unchanged on real hardware and,
 * with LD_PRELOAD=libsluice-verbs.so and SLUICE_SOCKET set, on Sluice.
 *
 *   gcc -Wall -O2 examples/sluice_devinfo.c -libverbs -o sluice_devinfo
 *   SLUICE_SOCKET=/run/sluice/tenants/blue.sock \
 *       LD_PRELOAD=./libsluice-verbs.so ./sluice_devinfo
 *
 * Exit status: 0 if every device could be opened and queried, 1 otherwise.
 */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <infiniband/verbs.h>

static const char *mtu_str(enum ibv_mtu mtu)
{
	switch (mtu) {
	case IBV_MTU_256: return "256";
	case IBV_MTU_512: return "512";
	case IBV_MTU_1024: return "1024";
	case IBV_MTU_2048: return "2048";
	case IBV_MTU_4096: return "4096";
	}
	return "invalid";
}

static const char *link_layer_str(uint8_t link_layer)
{
	switch (link_layer) {
	case IBV_LINK_LAYER_UNSPECIFIED:
	case IBV_LINK_LAYER_INFINIBAND: return "InfiniBand";
	case IBV_LINK_LAYER_ETHERNET: return "Ethernet";
	}
	return "unknown";
}

static void print_gid(const union ibv_gid *gid)
{
	char text[INET6_ADDRSTRLEN];

	if (inet_ntop(AF_INET6, gid->raw, text, sizeof(text)))
		printf("\tGID[0]:\t\t\t%s\n", text);
}

static int show_device(struct ibv_device *dev)
{
	struct ibv_device_attr attr;
	struct ibv_port_attr port;
	struct ibv_context *ctx;
	union ibv_gid gid;
	int err, rc = 0;

	printf("hca_id:\t%s\n", ibv_get_device_name(dev));
	printf("\tnode_guid:\t\t%016" PRIx64 "\n", be64toh(ibv_get_device_guid(dev)));
	ctx = ibv_open_device(dev);
	if (!ctx) {
		fprintf(stderr, "%s: cannot open: %s\n", ibv_get_device_name(dev), strerror(errno));
		return 1;
	}
	err = ibv_query_device(ctx, &attr);
	if (err) {
		fprintf(stderr, "%s: ibv_query_device: %s\n", ibv_get_device_name(dev), strerror(err));
		rc = 1;
		goto out;
	}
	printf("\tnode_type:\t\t%s\n", ibv_node_type_str(dev->node_type));
	printf("\tfw_ver:\t\t\t%s\n", attr.fw_ver);
	printf("\tphys_port_cnt:\t\t%u\n", attr.phys_port_cnt);
	printf("\tmax_qp:\t\t\t%d\n", attr.max_qp);
	printf("\tmax_qp_wr:\t\t%d\n", attr.max_qp_wr);
	printf("\tmax_sge:\t\t%d\n", attr.max_sge);
	printf("\tmax_cq:\t\t\t%d\n", attr.max_cq);
	printf("\tmax_cqe:\t\t%d\n", attr.max_cqe);
	printf("\tmax_mr:\t\t\t%d\n", attr.max_mr);
	printf("\tmax_mr_size:\t\t0x%" PRIx64 "\n", (uint64_t)attr.max_mr_size);
	printf("\tmax_pd:\t\t\t%d\n", attr.max_pd);

	err = ibv_query_port(ctx, 1, &port);
	if (err) {
		fprintf(stderr, "%s: ibv_query_port: %s\n", ibv_get_device_name(dev), strerror(err));
		rc = 1;
		goto out;
	}
	printf("\tport:\t1\n");
	printf("\t\tstate:\t\t\t%s (%d)\n", ibv_port_state_str(port.state), port.state);
	printf("\t\tmax_mtu:\t\t%s (%d)\n", mtu_str(port.max_mtu), port.max_mtu);
	printf("\t\tactive_mtu:\t\t%s (%d)\n", mtu_str(port.active_mtu), port.active_mtu);
	printf("\t\tport_lid:\t\t%u\n", port.lid);
	printf("\t\tphys_state:\t\t%u\n", port.phys_state);
	printf("\t\tlink_layer:\t\t%s\n", link_layer_str(port.link_layer));
	if (ibv_query_gid(ctx, 1, 0, &gid)) {
		fprintf(stderr, "%s: ibv_query_gid: %s\n", ibv_get_device_name(dev), strerror(errno));
		rc = 1;
		goto out;
	}
	print_gid(&gid);
out:
	ibv_close_device(ctx);
	return rc;
}

int main(void)
{
	struct ibv_device **list;
	int n, rc = 0;

	list = ibv_get_device_list(&n);
	if (!list) {
		perror("ibv_get_device_list");
		return 1;
	}
	if (n == 0)
		printf("no RDMA devices\n");
	for (int i = 0; i < n; i++)
		rc |= show_device(list[i]);
	ibv_free_device_list(list);
	return rc;
}
