using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Modular.Control.Stun;

namespace Modular.Server.Tests;

public sealed class StunTests
{
    [Fact]
    public async Task A_binding_request_gets_the_senders_address_back()
    {
        await using var server = await TestServer.StartAsync();
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));

        var mapped = await StunClient.QueryAsync(socket, server.Stun.LocalEndPoint!, cts.Token);

        Assert.Equal((IPEndPoint)socket.LocalEndPoint!, mapped);
    }

    [Fact]
    public async Task Garbage_is_dropped_and_the_server_keeps_answering()
    {
        await using var server = await TestServer.StartAsync();
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var target = server.Stun.LocalEndPoint!;

        var validHeader = new byte[20];
        StunMessage.WriteBindingRequest(validHeader, new byte[12]);
        byte[][] garbage =
        [
            [1, 2, 3],
            new byte[20], // zero cookie
            [.. validHeader.AsSpan(0, 2), 0, 4, .. validHeader.AsSpan(4), 0, 0], // length says 4, body has 2
            [.. validHeader.AsSpan(0, 2), 0, 8, .. validHeader.AsSpan(4), 0, 1, 0, 9, 0, 0, 0, 0], // attribute overruns
            Enumerable.Repeat((byte)0xff, 200).ToArray(),
        ];
        foreach (var packet in garbage)
        {
            await socket.SendToAsync(packet, SocketFlags.None, target);
        }

        // None of the garbage is answered: the only reply is to the valid request that follows.
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var mapped = await StunClient.QueryAsync(socket, target, cts.Token);
        Assert.Equal(((IPEndPoint)socket.LocalEndPoint!).Port, mapped.Port);
        Assert.True(server.Stun.Dropped >= garbage.Length);
        Assert.Equal(0, socket.Available);
    }

    [Fact]
    public void Xor_mapped_address_encodes_per_rfc5389()
    {
        var request = new byte[20];
        var transaction = Enumerable.Range(1, 12).Select(i => (byte)i).ToArray();
        StunMessage.WriteBindingRequest(request, transaction);
        Assert.True(StunMessage.IsBindingRequest(request));

        var response = new byte[StunMessage.MaxResponseSize];
        var n = StunMessage.WriteBindingSuccess(response, request, IPAddress.Parse("198.18.0.1"), 51820);
        Assert.Equal(32, n);
        Assert.Equal(0x0101, BinaryPrimitives.ReadUInt16BigEndian(response));
        // X-Port = port XOR 0x2112; X-Address = address XOR 0x2112A442.
        Assert.Equal(51820 ^ 0x2112, BinaryPrimitives.ReadUInt16BigEndian(response.AsSpan(26)));
        Assert.Equal(0xC6120001u ^ 0x2112A442u, BinaryPrimitives.ReadUInt32BigEndian(response.AsSpan(28)));
        Assert.True(StunMessage.TryReadBindingSuccess(response.AsSpan(0, n), transaction, out var mapped));
        Assert.Equal(new IPEndPoint(IPAddress.Parse("198.18.0.1"), 51820), mapped);

        var v6 = StunMessage.WriteBindingSuccess(response, request, IPAddress.Parse("2001:db8::1"), 3478);
        Assert.True(StunMessage.TryReadBindingSuccess(response.AsSpan(0, v6), transaction, out var mapped6));
        Assert.Equal(new IPEndPoint(IPAddress.Parse("2001:db8::1"), 3478), mapped6);
        Assert.False(StunMessage.TryReadBindingSuccess(response.AsSpan(0, v6), new byte[12], out _));
    }
}
