using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Control.Relay;
using Modular.Core.Engine;

namespace Modular.Core.Tests.Engine;

/// <summary>Issue 13 item 1, agent side: credentials management refreshes reach the relay connections already bound.</summary>
public sealed class RelayCredentialsRefreshTests
{
    private static readonly byte[] ServerSecret = Enumerable.Range(1, 32).Select(i => (byte)i).ToArray();

    private static ServiceAddresses Services(string relay, WgKey own, DateTimeOffset expires) => new()
    {
        RelayAddress = relay,
        RelayToken = ByteString.CopyFrom(RelayToken.Issue(ServerSecret, own, expires)),
        RelaySecret = ByteString.CopyFrom(RelayToken.DeriveSecret(ServerSecret, own, expires.ToUnixTimeSeconds())),
        RelayTokenExpiresUnix = expires.ToUnixTimeSeconds(),
    };

    [Fact]
    public async Task Relay_token_refresh_from_management_reaches_live_relay_connections()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        // A stand-in relay on loopback: answers the first Bind, then records what arrives.
        using var relay = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        relay.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var relayEndPoint = (IPEndPoint)relay.LocalEndPoint!;
        var address = relayEndPoint.ToString();
        var own = new WgKey(Enumerable.Repeat((byte)7, 32).ToArray());
        var remote = new WgKey(Enumerable.Repeat((byte)9, 32).ToArray());
        var connector = new EngineRelayConnector(null!, own, null!, null!, NullLogger.Instance);
        var first = time.GetUtcNow().AddHours(12);
        connector.Apply(Services(address, own, first));

        var connecting = RelayClient.ConnectAsync(relayEndPoint, own, remote, connector.Grant!.Credentials, cts.Token, TimeSpan.FromDays(30), time);
        var buffer = new byte[RelayProtocol.MaxDatagram];
        var from = new IPEndPoint(IPAddress.Any, 0);
        var bind = await relay.ReceiveFromAsync(buffer, SocketFlags.None, from, cts.Token);
        Assert.True(RelayToken.VerifySignedBind(ServerSecret, buffer.AsSpan(0, bind.ReceivedBytes), time.GetUtcNow()));
        await relay.SendToAsync(new byte[] { RelayProtocol.Bound, (byte)RelayProtocol.BindStatus.Waiting }, SocketFlags.None, bind.RemoteEndPoint, cts.Token);
        await using var connection = await connecting;
        connector.Track(connection, address);

        // Six hours on, management's Sync stream brings fresh credentials: the live connection rebinds with them at once.
        time.Advance(TimeSpan.FromHours(6));
        var second = time.GetUtcNow().AddHours(12);
        connector.Apply(Services(address, own, second));
        var refresh = await relay.ReceiveFromAsync(buffer, SocketFlags.None, from, cts.Token);
        var datagram = buffer.AsSpan(0, refresh.ReceivedBytes);
        Assert.Equal(RelayProtocol.SignedBind, datagram[0]);
        Assert.Equal(second.ToUnixTimeSeconds(), RelayProtocol.ReadSignedBind(datagram).ExpiresUnix);
        // Signed under the new per-token secret, and valid after the first credentials expired.
        Assert.True(RelayToken.VerifySignedBind(ServerSecret, datagram, first.AddMinutes(1)));
        Assert.Equal(second.ToUnixTimeSeconds(), connection.CredentialsExpireUnix);
    }
}
