using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Control.Management;
using Modular.Core.MeshDns;
using static Modular.Core.Tests.Dns.DnsTestMessages;

namespace Modular.Core.Tests.Dns;

/// <summary>Forwarding to an in-process upstream on 127.0.0.1: relay with the client's ID, timeout → SERVFAIL, TC → TCP.</summary>
public sealed class DnsForwarderTests : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new(TimeSpan.FromSeconds(60));
    private static readonly TimeSpan Short = TimeSpan.FromMilliseconds(300);
    private readonly List<IDisposable> _sockets = [];

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _sockets.ForEach(s => s.Dispose());
        _stop.Dispose();
    }

    /// <summary>An upstream answering A 192.0.2.10 for every question; <paramref name="truncateUdp"/>: over UDP only TC and no answer.</summary>
    private IPEndPoint FakeUpstream(bool truncateUdp = false, bool silent = false, bool spoofFirst = false, bool garbage = false, int records = 1)
    {
        var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        udp.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var endpoint = (IPEndPoint)udp.LocalEndPoint!;
        var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        tcp.Bind(endpoint);
        tcp.Listen();
        _sockets.Add(udp);
        _sockets.Add(tcp);
        var token = _stop.Token;
        _ = Task.Run(async () =>
        {
            var buffer = new byte[4096];
            while (!token.IsCancellationRequested)
            {
                var r = await udp.ReceiveFromAsync(buffer, new IPEndPoint(IPAddress.Any, 0), token);
                Interlocked.Increment(ref _udpQueries);
                LastUpstreamId = BinaryPrimitives.ReadUInt16BigEndian(buffer);
                if (silent)
                {
                    continue;
                }

                if (garbage)
                {
                    var random = new Random(r.ReceivedBytes);
                    for (var i = 0; i < 20; i++)
                    {
                        var junk = new byte[random.Next(0, 300)];
                        random.NextBytes(junk);
                        if (junk.Length >= 2 && i % 2 == 0)
                        {
                            junk[0] = buffer[0]; // the right ID, the rest broken
                            junk[1] = buffer[1];
                        }

                        await udp.SendToAsync(junk, r.RemoteEndPoint, token);
                    }

                    continue;
                }

                if (spoofFirst)
                {
                    var spoof = Answer(buffer.AsSpan(0, r.ReceivedBytes), truncate: false, address: "203.0.113.66");
                    spoof[0] ^= 0xFF;
                    await udp.SendToAsync(spoof, r.RemoteEndPoint, token);
                }

                await udp.SendToAsync(Answer(buffer.AsSpan(0, r.ReceivedBytes), truncateUdp, records: records), r.RemoteEndPoint, token);
            }
        }, token);
        _ = Task.Run(async () =>
        {
            while (!token.IsCancellationRequested)
            {
                using var client = await tcp.AcceptAsync(token);
                Interlocked.Increment(ref _tcpQueries);
                var length = new byte[2];
                await client.ReceiveAsync(length, token);
                var query = new byte[BinaryPrimitives.ReadUInt16BigEndian(length)];
                for (var got = 0; got < query.Length;)
                {
                    got += await client.ReceiveAsync(query.AsMemory(got), token);
                }

                var answer = Answer(query, truncate: false, records: records);
                var framed = new byte[answer.Length + 2];
                BinaryPrimitives.WriteUInt16BigEndian(framed, (ushort)answer.Length);
                answer.CopyTo(framed, 2);
                await client.SendAsync(framed, token);
            }
        }, token);
        return endpoint;
    }

    private int _udpQueries;
    private int _tcpQueries;

    private ushort LastUpstreamId { get; set; }

    /// <summary>The query echoed back as a response: question kept, one A record unless truncated.</summary>
    private static byte[] Answer(ReadOnlySpan<byte> query, bool truncate, string address = "192.0.2.10", int records = 1)
    {
        Assert.True(DnsMessageReader.TrySkipName(query, 12, out var nameEnd));
        var questionEnd = nameEnd + 4;
        var answer = new List<byte>(query[..questionEnd].ToArray());
        answer[2] = (byte)(0x81 | (truncate ? 0x02 : 0));
        answer[3] = 0x80;
        answer[5] = 1;
        answer[6] = 0;
        answer[7] = (byte)(truncate ? 0 : records);
        answer[10] = 0;
        answer[11] = 0;
        for (var i = 0; i < (truncate ? 0 : records); i++)
        {
            answer.AddRange([0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, .. IPAddress.Parse(address).GetAddressBytes()]);
            answer[^1] += (byte)i;
        }

        return [.. answer];
    }

    /// <summary>The product's UDP timeout: an upstream that answers must never lose to a loaded test machine.</summary>
    private static DnsResolver Resolver(params NameserverGroup[] groups) => Resolver(new DnsForwarderOptions().UdpTimeout, groups);

    /// <summary>
    /// A short <paramref name="udpTimeout"/> for tests where no upstream answers in time (silent or garbage): where
    /// one must answer, the product's timeout is used, since a loaded machine can delay an answer past a short one.
    /// </summary>
    private static DnsResolver Resolver(TimeSpan udpTimeout, params NameserverGroup[] groups)
        => new(new DnsForwarder(new DnsForwarderOptions { UdpTimeout = udpTimeout, TcpTimeout = TimeSpan.FromSeconds(5) }, TimeProvider.System, NullLogger.Instance), NullLogger.Instance)
        {
            Records = DnsRecords.FromMap(Map("modular.internal", groups)),
        };

    private static NameserverGroup Group(string domain, params IPEndPoint[] servers)
        => new() { Name = domain.Length == 0 ? "default" : domain, Nameservers = { servers.Select(s => s.ToString()) }, Domains = { domain.Length == 0 ? [] : [domain] } };

    [Fact]
    public async Task A_forwarded_answer_comes_back_with_the_clients_id()
    {
        var upstream = FakeUpstream();
        var resolver = Resolver(Group("corp.test", upstream));
        var response = new byte[65535];
        var length = await resolver.ResolveAsync(Query("host.corp.test", 1, id: 0xBEEF), response, overTcp: false, _stop.Token);
        var r = Parse(response.AsSpan(0, length));
        Assert.Equal(0xBEEF, r.Id);
        Assert.Equal(0, r.Rcode);
        Assert.Equal("host.corp.test", r.Question);
        Assert.Equal([(DnsConstants.TypeA, "192.0.2.10")], r.Answers);
        Assert.Equal(1, _udpQueries);
        Assert.Equal(1, resolver.Forwarded);
    }

    [Fact]
    public async Task Each_outcome_counts_once_in_the_counter_status_shows()
    {
        var resolver = Resolver(Group("corp.test", FakeUpstream()), Group("dead.test", FakeUpstream(silent: true)));
        var response = new byte[65535];
        async Task<int> Rcode(byte[] query) => Parse(response.AsSpan(0, await resolver.ResolveAsync(query, response, overTcp: false, _stop.Token))).Rcode;
        var twoQuestions = Query("peer-b.modular.internal", 1);
        twoQuestions[5] = 2;

        Assert.Equal(0, await Rcode(Query("peer-b.modular.internal", 1)));
        Assert.Equal(0, await Rcode(Query("peer-b.modular.internal", 15))); // NODATA: local, not NXDOMAIN
        Assert.Equal((int)DnsRcode.NxDomain, await Rcode(Query("nobody.modular.internal", 1)));
        Assert.Equal(0, await Rcode(Query("host.corp.test", 1)));
        Assert.Equal((int)DnsRcode.ServFail, await Rcode(Query("host.dead.test", 1)));
        Assert.Equal((int)DnsRcode.Refused, await Rcode(Query("www.example.org", 1)));
        Assert.Equal((int)DnsRcode.FormErr, await Rcode(twoQuestions));
        Assert.Equal(0, await resolver.ResolveAsync(new byte[5], response, overTcp: false, _stop.Token)); // not a query: dropped, not counted

        Assert.Equal(7, resolver.Queries);
        Assert.Equal(3, resolver.AnsweredFromZone);
        Assert.Equal(1, resolver.NxDomain);
        Assert.Equal(2, resolver.Forwarded);
        Assert.Equal(1, resolver.ForwardFailures);
        Assert.Equal(1, resolver.Refused);
        Assert.Equal(1, resolver.Malformed);
    }

    [Fact]
    public async Task The_services_status_carries_the_zone_the_groups_and_the_counters()
    {
        var loggers = Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance;
        await using var service = new MeshDnsService(0, loggers, TimeProvider.System);
        Assert.False(service.Status().Enabled);

        var map = Map("modular.internal", Group("corp.test", FakeUpstream()));
        map.PeerConfig.Address = "127.0.0.1/8"; // loopback stands in for the overlay address here
        await service.ApplyAsync(map, _stop.Token);
        var response = new byte[512];
        service.Resolver.Answer(Query("peer-b.modular.internal", 1), response, out _, out _);

        var status = service.Status();
        Assert.True(status.Enabled);
        Assert.Equal(service.Listening!.ToString(), status.Listening);
        Assert.StartsWith("127.0.0.1:", status.Listening, StringComparison.Ordinal);
        Assert.Equal("modular.internal", status.Zone);
        Assert.Equal(service.Resolver.Records.HostCount, status.Records);
        Assert.True(status.Records > 0);
        Assert.Equal(1, status.NameserverGroups);
        Assert.Equal(1, status.Queries);
        Assert.Equal(1, status.AnsweredLocally);

        map.Dns.Enabled = false;
        await service.ApplyAsync(map, _stop.Token);
        Assert.False(service.Status().Enabled);
        Assert.Null(service.Status().Listening);
    }

    [Fact]
    public async Task The_default_group_takes_names_no_domain_matches()
    {
        var corp = FakeUpstream();
        var fallback = FakeUpstream();
        var resolver = Resolver(Group("corp.test", corp), Group("", fallback));
        var response = new byte[65535];
        var length = await resolver.ResolveAsync(Query("www.example.org", 1), response, overTcp: false, _stop.Token);
        Assert.Equal(0, Parse(response.AsSpan(0, length)).Rcode);
        Assert.Equal(1, _udpQueries);
    }

    [Fact]
    public async Task A_silent_upstream_times_out_into_servfail()
    {
        var resolver = Resolver(Short, Group("corp.test", FakeUpstream(silent: true)));
        var response = new byte[65535];
        var length = await resolver.ResolveAsync(Query("host.corp.test", 1, id: 7), response, overTcp: false, _stop.Token);
        var r = Parse(response.AsSpan(0, length));
        Assert.Equal(7, r.Id);
        Assert.Equal((int)DnsRcode.ServFail, r.Rcode);
        Assert.Equal("host.corp.test", r.Question);
        Assert.Equal(1, resolver.ForwardFailures);
        Assert.Equal(1, resolver.Forwarder.Timeouts);
    }

    [Fact]
    public async Task The_next_nameserver_answers_when_the_first_is_silent()
    {
        var resolver = Resolver(Group("corp.test", FakeUpstream(silent: true), FakeUpstream()));
        var response = new byte[65535];
        var length = await resolver.ResolveAsync(Query("host.corp.test", 1), response, overTcp: false, _stop.Token);
        Assert.Equal([(DnsConstants.TypeA, "192.0.2.10")], Parse(response.AsSpan(0, length)).Answers);
    }

    [Fact]
    public async Task A_closed_port_fails_over_without_waiting_for_the_timeout()
    {
        // An address no other test binds, so the freed port cannot be taken over by a parallel test's socket.
        using var closed = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        closed.Bind(new IPEndPoint(IPAddress.Parse("127.0.0.55"), 0));
        var dead = (IPEndPoint)closed.LocalEndPoint!;
        closed.Close();
        var resolver = Resolver(Group("corp.test", dead, FakeUpstream()));
        var response = new byte[65535];
        var length = await resolver.ResolveAsync(Query("host.corp.test", 1), response, overTcp: false, _stop.Token);
        Assert.Equal(0, Parse(response.AsSpan(0, length)).Rcode);
        Assert.Equal(0, resolver.Forwarder.Timeouts);
    }

    [Fact]
    public async Task A_truncated_udp_answer_is_fetched_again_over_tcp()
    {
        var resolver = Resolver(Group("corp.test", FakeUpstream(truncateUdp: true)));
        var response = new byte[65535];
        var length = await resolver.ResolveAsync(Query("host.corp.test", 1, id: 99), response, overTcp: false, _stop.Token);
        var r = Parse(response.AsSpan(0, length));
        Assert.Equal(99, r.Id);
        Assert.False(r.Truncated);
        Assert.Equal([(DnsConstants.TypeA, "192.0.2.10")], r.Answers);
        Assert.Equal(1, _tcpQueries);
        Assert.Equal(1, resolver.Forwarder.TcpRetries);
    }

    [Fact]
    public async Task An_answer_with_the_wrong_id_is_ignored()
    {
        var resolver = Resolver(Group("corp.test", FakeUpstream(spoofFirst: true)));
        var response = new byte[65535];
        var length = await resolver.ResolveAsync(Query("host.corp.test", 1), response, overTcp: false, _stop.Token);
        Assert.Equal([(DnsConstants.TypeA, "192.0.2.10")], Parse(response.AsSpan(0, length)).Answers);
    }

    [Fact]
    public async Task An_upstream_sending_garbage_ends_in_servfail()
    {
        var resolver = Resolver(Short, Group("corp.test", FakeUpstream(garbage: true)));
        var response = new byte[65535];
        var length = await resolver.ResolveAsync(Query("host.corp.test", 1, id: 5), response, overTcp: false, _stop.Token);
        var r = Parse(response.AsSpan(0, length));
        Assert.Equal(5, r.Id);
        Assert.Equal((int)DnsRcode.ServFail, r.Rcode);
    }

    [Fact]
    public async Task An_answer_too_large_for_the_udp_client_comes_back_truncated_and_whole_over_tcp()
    {
        // Upstream: TC over UDP, 40 A records (over 512 bytes) over TCP. A UDP client without EDNS gets TC and
        // the question (so it asks again over TCP); a TCP client gets all 40.
        var resolver = Resolver(Group("corp.test", FakeUpstream(truncateUdp: true, records: 40)));
        var response = new byte[65535];
        var udpLength = await resolver.ResolveAsync(Query("big.corp.test", 1, id: 11), response, overTcp: false, _stop.Token);
        var udp = Parse(response.AsSpan(0, udpLength));
        Assert.Equal(11, udp.Id);
        Assert.True(udp.Truncated);
        Assert.Empty(udp.Answers);
        Assert.Equal("big.corp.test", udp.Question);

        var tcpLength = await resolver.ResolveAsync(Query("big.corp.test", 1, id: 12), response, overTcp: true, _stop.Token);
        Assert.True(tcpLength > 512);
        var tcp = Parse(response.AsSpan(0, tcpLength));
        Assert.Equal(12, tcp.Id);
        Assert.False(tcp.Truncated);
        Assert.Equal(40, tcp.Answers.Count);
        Assert.Equal("192.0.2.49", tcp.Answers[^1].Data);
    }

    [Fact]
    public async Task Past_the_concurrency_bound_a_query_gets_servfail_at_once()
    {
        var upstream = FakeUpstream(silent: true);
        using var forwarder = new DnsForwarder(new DnsForwarderOptions { MaxConcurrent = 1, UdpTimeout = TimeSpan.FromSeconds(20) }, TimeProvider.System, NullLogger.Instance);
        var resolver = new DnsResolver(forwarder, NullLogger.Instance) { Records = DnsRecords.FromMap(Map("modular.internal", Group("corp.test", upstream))) };
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        var first = resolver.ResolveAsync(Query("a.corp.test", 1), new byte[65535], overTcp: false, cancel.Token).AsTask();
        while (Volatile.Read(ref _udpQueries) == 0)
        {
            await Task.Delay(10);
        }

        var response = new byte[65535];
        var length = await resolver.ResolveAsync(Query("b.corp.test", 1), response, overTcp: false, _stop.Token);
        Assert.Equal((int)DnsRcode.ServFail, Parse(response.AsSpan(0, length)).Rcode);
        Assert.Equal(1, forwarder.RejectedBusy);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first);
    }

    [Fact]
    public async Task The_resolver_never_forwards_to_itself()
    {
        var upstream = FakeUpstream();
        var resolver = Resolver(Group("corp.test", upstream));
        resolver.Forwarder.Self = upstream;
        var response = new byte[65535];
        var length = await resolver.ResolveAsync(Query("host.corp.test", 1), response, overTcp: false, _stop.Token);
        Assert.Equal((int)DnsRcode.ServFail, Parse(response.AsSpan(0, length)).Rcode);
        Assert.Equal(0, _udpQueries);
    }
}
