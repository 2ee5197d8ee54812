using Modular.Abstractions.Proxy;
using Modular.Abstractions.Security;
using Modular.Abstractions.WireGuard;
using Modular.Plugins.Rosenpass;

namespace Modular.Composition.Tests.Plugins;

public sealed class PlaceholderPluginTests
{
    [Fact]
    public async Task Rosenpass_provider_refuses_peers_without_Rosenpass_when_strict_and_gives_permissive_ones_the_account_psk()
    {
        // The placeholder that allowed every peer is gone: the provider applies the precedence
        // (RosenpassProviderTests covers the whole matrix; RealExchangeTests the exchange itself).
        var factory = new RosenpassProviderFactory();
        Assert.StartsWith("Rosenpass PSKs", factory.Description, StringComparison.Ordinal);
        await using var provider = await factory.CreateAsync(new FakePluginContext(), CancellationToken.None);
        var account = new WgKey(Enumerable.Repeat((byte)5, 32).ToArray());
        var strict = await provider.GetPresharedKeyAsync(new PskPeer(new WgKey(new byte[32]), "peer1", null, null) { AccountPresharedKey = account }, CancellationToken.None);
        var permissive = await provider.GetPresharedKeyAsync(new PskPeer(new WgKey(new byte[32]), "peer1", null, null) { AccountPresharedKey = account, Permissive = true }, CancellationToken.None);
        Assert.False(strict.Allowed);
        Assert.True(permissive.Allowed);
        Assert.Equal(account, permissive.PresharedKey);
        Assert.Null(permissive.QuantumResistantSince);
    }

    [Fact]
    public async Task Rosenpass_provider_without_an_exchange_address_or_port_tells_status_why()
    {
        // No address (the host always passes the overlay IP; a [plugins.rosenpass] section may override it badly).
        var factory = new RosenpassProviderFactory();
        await using (var provider = await factory.CreateAsync(new FakePluginContext(), CancellationToken.None))
        {
            var problem = Assert.IsAssignableFrom<IPresharedKeyProviderStatus>(provider).Problem;
            Assert.StartsWith("no exchange address", problem, StringComparison.Ordinal);
        }

        // The port is taken: the provider runs (seed PSKs), but no exchange does.
        using var taken = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp);
        taken.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        var port = ((System.Net.IPEndPoint)taken.LocalEndPoint!).Port;
        var settings = new Dictionary<string, object?> { ["address"] = "127.0.0.1", ["port"] = (long)port };
        await using (var provider = await factory.CreateAsync(new FakePluginContext(settings), CancellationToken.None))
        {
            var problem = Assert.IsAssignableFrom<IPresharedKeyProviderStatus>(provider).Problem;
            Assert.StartsWith($"cannot listen on 127.0.0.1:{port}", problem, StringComparison.Ordinal);
        }
    }
}
