/* SPDX-License-Identifier: MIT */
/*
 * pb.h - the one protobuf-c allocator of the p2p module and the modules above it. Every message
 * they pack or unpack (noise payload, identify, kad, infer, IPNS, signed records, capability
 * records) allocates through dc_malloc/dc_free, so the allocation-failure tests reach
 * protobuf-c's allocations too.
 */
#ifndef DC_P2P_PB_H
#define DC_P2P_PB_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

extern ProtobufCAllocator dc_pb_allocator;

/* The error for an unpack of 'len' bytes that returned NULL: protobuf-c reports malformed input
 * and a failed allocation alike, so one probe of about the input's size tells them apart.
 * DC_ENOMEM or DC_ECORRUPT. */
int dc_pb_unpack_error(size_t len);

#endif
