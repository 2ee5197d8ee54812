using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;
using Modular.Control.Flows;
using Modular.Server.Flows;
using StackExchange.Redis;

namespace Modular.Server.Tests;

/// <summary>The flow component over gRPC: sealed batches from registered peers, stored once, acknowledged after commit.</summary>
public sealed class FlowApiTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_batch_is_acknowledged_and_the_same_batch_again_is_stored_once()
    {
        await using var server = await TestServer.StartAsync();
        var (key, client) = await RegisteredAgentAsync(server, "alpha");
        using var _ = key;
        using var flows = client;
        var batch = FlowSamples.Batch(DateTimeOffset.UtcNow, 4);

        var ack = await flows.SendAsync(FlowSamples.Records(batch), CancellationToken.None);
        var again = await flows.SendAsync(FlowSamples.Records(batch), CancellationToken.None);

        Assert.Null(ack.Refusal);
        Assert.Equal(batch.Select(e => e.Id).Order(), ack.Acknowledged.Select(Id).Order());
        Assert.Equal(batch.Select(e => e.Id).Order(), again.Acknowledged.Select(Id).Order());
        Assert.Equal(4, await server.Store.CountFlowEventsAsync(CancellationToken.None));
        var stored = await server.Store.ListFlowEventsAsync("alpha", null, 10, CancellationToken.None);
        Assert.Equal(batch.OrderBy(e => e.Id), stored.Select(s => s.Event).OrderBy(e => e.Id));
    }

    [Fact]
    public async Task After_a_server_restart_the_same_batch_is_stored_once()
    {
        var dataDir = TestServer.NewDataDir();
        try
        {
            var batch = FlowSamples.Batch(DateTimeOffset.UtcNow, 3);
            using var key = X25519KeyPair.Generate();
            await using (var first = await TestServer.StartAsync(dataDir))
            {
                using var flows = await RegisterAsync(first, key, "alpha");
                Assert.Equal(3, (await flows.SendAsync(FlowSamples.Records(batch), CancellationToken.None)).Acknowledged.Count);
            }

            // The acknowledgement was lost, say: the agent sends the batch again to the restarted server.
            await using var second = await TestServer.StartAsync(dataDir);
            using var again = new FlowClient(second.Channel().CreateCallInvoker(), key, await ServerKeyAsync(second));
            var ack = await again.SendAsync(FlowSamples.Records(batch), CancellationToken.None);

            Assert.Equal(3, ack.Acknowledged.Count);
            Assert.Equal(3, await second.Store.CountFlowEventsAsync(CancellationToken.None));
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(dataDir, recursive: true);
        }
    }

    [Fact]
    public async Task A_batch_from_an_unregistered_key_is_refused_and_nothing_is_stored()
    {
        await using var server = await TestServer.StartAsync();
        using var stranger = X25519KeyPair.Generate();
        using var flows = new FlowClient(server.Channel().CreateCallInvoker(), stranger, await ServerKeyAsync(server));

        var ack = await flows.SendAsync(FlowSamples.Records(FlowSamples.Batch(DateTimeOffset.UtcNow, 2)), CancellationToken.None);

        Assert.Equal((int)StatusCode.PermissionDenied, ack.Refusal.Code);
        Assert.Empty(ack.Acknowledged);
        Assert.Equal(0, await server.Store.CountFlowEventsAsync(CancellationToken.None));
    }

    [Fact]
    public async Task Malformed_batches_are_refused_whole_and_nothing_is_stored()
    {
        await using var server = await TestServer.StartAsync();
        var (key, flows) = await RegisteredAgentAsync(server, "alpha");
        using var _ = key;
        using var __ = flows;
        var serverKey = await ServerKeyAsync(server);

        // One bad event (a 3-byte address) spoils the batch: the good one beside it is not stored either.
        var bad = FlowRecords.ToRecord(FlowSamples.Tcp(DateTimeOffset.UtcNow, 1));
        bad.SourceAddress = ByteString.CopyFrom(1, 2, 3);
        var mixed = await flows.SendAsync([FlowRecords.ToRecord(FlowSamples.Tcp(DateTimeOffset.UtcNow, 0)), bad], CancellationToken.None);
        Assert.Equal((int)StatusCode.InvalidArgument, mixed.Refusal.Code);
        Assert.Contains("event 1", mixed.Refusal.Detail, StringComparison.Ordinal);

        var shortId = FlowRecords.ToRecord(FlowSamples.Tcp(DateTimeOffset.UtcNow));
        shortId.Id = ByteString.CopyFrom(1, 2);
        Assert.Equal((int)StatusCode.InvalidArgument, (await flows.SendAsync([shortId], CancellationToken.None)).Refusal.Code);

        // Sealed by the agent, but not a FlowBatch: a sealed refusal for that batch.
        var stub = new FlowService.FlowServiceClient(server.Channel());
        using (var call = stub.Upload())
        {
            var garbage = Envelope.Seal(key, serverKey, Envelope.Purposes.Flow, [0xff, 0xff, 0xff, 0x01]);
            await call.RequestStream.WriteAsync(new SealedFlowBatch { WgPubKey = ByteString.CopyFrom(key.PublicKey.ToArray()), Body = ByteString.CopyFrom(garbage) });
            Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
            Assert.True(Envelope.TryOpen(key, serverKey, Envelope.Purposes.FlowAck, call.ResponseStream.Current.Body.Span, out var plain, garbage.AsSpan(0, Envelope.NonceSize)));
            Assert.Equal((int)StatusCode.InvalidArgument, FlowAck.Parser.ParseFrom(plain).Refusal.Code);

            // A body that does not open with the key it names ends the stream with a bare status.
            var tampered = Envelope.Seal(key, serverKey, Envelope.Purposes.Flow, new FlowBatch { TimestampUnix = DateTimeOffset.UtcNow.ToUnixTimeSeconds() }.ToByteArray());
            tampered[^1] ^= 1;
            await call.RequestStream.WriteAsync(new SealedFlowBatch { WgPubKey = ByteString.CopyFrom(key.PublicKey.ToArray()), Body = ByteString.CopyFrom(tampered) });
            var e = await Assert.ThrowsAsync<RpcException>(() => call.ResponseStream.MoveNext(CancellationToken.None));
            Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        }

        Assert.Equal(0, await server.Store.CountFlowEventsAsync(CancellationToken.None));
    }

    [Fact]
    public async Task Batches_over_a_limit_are_refused_whole_and_nothing_is_stored()
    {
        await using var server = await TestServer.StartAsync(services: s => s.AddSingleton(new FlowApiLimits(MaxBatchEvents: 5, MaxBatchBytes: 2048)));
        var (key, flows) = await RegisteredAgentAsync(server, "alpha");
        using var _ = key;
        using var __ = flows;

        var tooMany = await flows.SendAsync(FlowSamples.Records(FlowSamples.Batch(DateTimeOffset.UtcNow, 6)), CancellationToken.None);
        Assert.Equal((int)StatusCode.ResourceExhausted, tooMany.Refusal.Code);

        // Five events, but each with three 128-character IDs: about 2.4 KB, over the 2 KB limit.
        var big = FlowSamples.Batch(DateTimeOffset.UtcNow, 5).Select(e => e with { RuleId = new string('r', 128), SourceResourceId = new string('s', 128), DestinationResourceId = new string('d', 128) });
        var tooBig = await flows.SendAsync(FlowSamples.Records(big), CancellationToken.None);
        Assert.Equal((int)StatusCode.ResourceExhausted, tooBig.Refusal.Code);

        // Within both limits the same stream goes on.
        var fine = await flows.SendAsync(FlowSamples.Records(FlowSamples.Batch(DateTimeOffset.UtcNow, 5)), CancellationToken.None);
        Assert.Null(fine.Refusal);
        Assert.Equal(5, await server.Store.CountFlowEventsAsync(CancellationToken.None));
    }

    [SkippableFact]
    public async Task Redis_holds_recent_flows_and_per_peer_totals_beside_the_store()
    {
        using var redis = await RedisProcess.StartAsync();
        await using var server = await TestServer.StartAsync(tweak: c => c with { RedisUrl = redis.Url });
        var (key, flows) = await RegisteredAgentAsync(server, "alpha");
        using var _ = key;
        using var __ = flows;
        var now = DateTimeOffset.UtcNow;
        var batch = new[]
        {
            FlowSamples.Tcp(now, 1, Abstractions.Flows.FlowEventType.Start, rxBytes: 60, txBytes: 40),
            FlowSamples.Tcp(now, 1, Abstractions.Flows.FlowEventType.End, rxBytes: 6000, txBytes: 4000),
            FlowSamples.Tcp(now, 2, Abstractions.Flows.FlowEventType.Drop),
        };

        Assert.Equal(3, (await flows.SendAsync(FlowSamples.Records(batch), CancellationToken.None)).Acknowledged.Count);
        // Sent again: acknowledged, but the cache counts only what the store added.
        await flows.SendAsync(FlowSamples.Records(batch), CancellationToken.None);

        var peerId = (await server.Store.ListFlowEventsAsync("alpha", null, 1, CancellationToken.None))[0].PeerId;
        await using var client = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{redis.Port}");
        var db = client.GetDatabase();
        var totals = RedisFlowCache.TotalsPrefix + peerId;
        // The cache is written after the acknowledgement went out: wait for it.
        using var timeout = new CancellationTokenSource(Wait);
        while ((long)await db.HashGetAsync(totals, "events") < 3)
        {
            await Task.Delay(20, timeout.Token);
        }

        var recent = await db.ListRangeAsync(RedisFlowCache.RecentPrefix + peerId);
        Assert.Equal(3, recent.Length);
        Assert.Contains(batch[2].Id.ToString("D"), recent[0].ToString(), StringComparison.Ordinal);
        Assert.Equal(3, (long)await db.HashGetAsync(totals, "events"));
        Assert.Equal(1, (long)await db.HashGetAsync(totals, "drop"));
        Assert.Equal(6000, (long)await db.HashGetAsync(totals, "rx_bytes"));
        Assert.Equal(4000, (long)await db.HashGetAsync(totals, "tx_bytes"));
        Assert.True(await db.KeyTimeToLiveAsync(totals) is { } ttl && ttl > TimeSpan.FromDays(6));
        Assert.Equal(3, await server.Store.CountFlowEventsAsync(CancellationToken.None));
    }

    [Fact]
    public async Task With_redis_unreachable_batches_are_still_stored_and_acknowledged()
    {
        await using var server = await TestServer.StartAsync(tweak: c => c with { RedisUrl = $"redis://127.0.0.1:{RedisProcess.FreePort()}" });
        var (key, flows) = await RegisteredAgentAsync(server, "alpha");
        using var _ = key;
        using var __ = flows;

        var first = await flows.SendAsync(FlowSamples.Records(FlowSamples.Batch(DateTimeOffset.UtcNow, 2)), CancellationToken.None);
        var second = await flows.SendAsync(FlowSamples.Records(FlowSamples.Batch(DateTimeOffset.UtcNow, 2)), CancellationToken.None);

        Assert.Equal(2, first.Acknowledged.Count);
        Assert.Equal(2, second.Acknowledged.Count);
        Assert.Equal(4, await server.Store.CountFlowEventsAsync(CancellationToken.None));
    }

    [Fact]
    public async Task An_acknowledgement_for_another_batch_does_not_open()
    {
        await using var server = await TestServer.StartAsync();
        var (key, flows) = await RegisteredAgentAsync(server, "alpha");
        using var owned = key;
        using var unused = flows;
        var serverKey = await ServerKeyAsync(server);
        var stub = new FlowService.FlowServiceClient(server.Channel());
        using var call = stub.Upload();
        var body = Envelope.Seal(key, serverKey, Envelope.Purposes.Flow, new FlowBatch { TimestampUnix = DateTimeOffset.UtcNow.ToUnixTimeSeconds() }.ToByteArray());
        await call.RequestStream.WriteAsync(new SealedFlowBatch { WgPubKey = ByteString.CopyFrom(key.PublicKey.ToArray()), Body = ByteString.CopyFrom(body) });
        Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
        var answer = call.ResponseStream.Current.Body.Span;

        Assert.True(Envelope.TryOpen(key, serverKey, Envelope.Purposes.FlowAck, answer, out _, body.AsSpan(0, Envelope.NonceSize)));
        Assert.False(Envelope.TryOpen(key, serverKey, Envelope.Purposes.FlowAck, answer, out _, new byte[Envelope.NonceSize]));
    }

    private static Guid Id(ByteString bytes) => FlowRecords.TryGuid(bytes, out var id) ? id : throw new InvalidDataException("not a 16-byte ID");

    private static async Task<WgKey> ServerKeyAsync(TestServer server)
    {
        using var anyone = X25519KeyPair.Generate();
        return await new Control.Management.ManagementClient(server.Channel(), anyone).GetServerKeyAsync(CancellationToken.None);
    }

    private static async Task<FlowClient> RegisterAsync(TestServer server, X25519KeyPair key, string hostname)
    {
        var management = new Control.Management.ManagementClient(server.Channel(), key);
        await management.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta(hostname), CancellationToken.None);
        return new FlowClient(server.Channel().CreateCallInvoker(), key, await management.GetServerKeyAsync(CancellationToken.None));
    }

    private static async Task<(X25519KeyPair Key, FlowClient Flows)> RegisteredAgentAsync(TestServer server, string hostname)
    {
        var key = X25519KeyPair.Generate();
        return (key, await RegisterAsync(server, key, hostname));
    }
}
