using System.Security.Cryptography;
using Grpc.Core;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Control.Rosenpass;
using Modular.Core.Engine;

namespace Modular.Server.Tests;

/// <summary>
/// Management's Rosenpass key calls against a real server: a McEliece-sized key is published (the fingerprint checked),
/// fetched by fingerprint, deleted with its peer; and the agent's key directory caches what it fetched.
/// </summary>
public sealed class RosenpassKeyTests
{
    [Fact]
    public async Task A_published_key_is_fetched_by_fingerprint_and_announced_in_the_peer_metadata()
    {
        await using var server = await TestServer.StartAsync();
        var setupKey = await server.CreateSetupKeyAsync();
        var (publisherKey, publisher) = server.NewAgent();
        await publisher.RegisterAsync(setupKey, TestServer.Meta("a"), CancellationToken.None);
        var fetcher = await server.RegisterAgentAsync(setupKey, "b");
        var publicKey = RandomNumberGenerator.GetBytes(RosenpassKeys.McEliece460896PublicKeySize);
        var fingerprint = RosenpassKeys.Fingerprint(publicKey);

        await publisher.PublishRosenpassKeyAsync(publicKey, fingerprint, "100.64.0.1:9999", CancellationToken.None);
        var fetched = await fetcher.GetRosenpassKeyAsync(fingerprint, CancellationToken.None);

        Assert.Equal(publicKey, fetched);
        var stored = await server.Store.GetPeerAsync(publisherKey.PublicKey, CancellationToken.None);
        Assert.Equal(fingerprint, stored!.RosenpassFingerprint);
        Assert.Equal("100.64.0.1:9999", stored.RosenpassAddr);
        Assert.Null(await fetcher.GetRosenpassKeyAsync(RosenpassKeys.Fingerprint([1, 2, 3]), CancellationToken.None));
    }

    [Fact]
    public async Task Only_the_key_calls_take_a_body_over_the_ordinary_limit()
    {
        await using var server = await TestServer.StartAsync();
        var setupKey = await server.CreateSetupKeyAsync();
        var agent = await server.RegisterAgentAsync(setupKey, "a");
        var large = RandomNumberGenerator.GetBytes(ManagementGrpcServiceLimit + 4096);

        await agent.PublishRosenpassKeyAsync(large, RosenpassKeys.Fingerprint(large), "100.64.0.1:9999", CancellationToken.None);
        var login = await Assert.ThrowsAsync<RpcException>(() => agent.LoginAsync(new PeerMeta { Hostname = new string('a', ManagementGrpcServiceLimit + 4096) }, CancellationToken.None));

        Assert.Equal(large, await agent.GetRosenpassKeyAsync(RosenpassKeys.Fingerprint(large), CancellationToken.None));
        Assert.Equal(StatusCode.ResourceExhausted, login.StatusCode);
    }

    private const int ManagementGrpcServiceLimit = Management.ManagementGrpcService.MaxMessageSize;

    [Fact]
    public async Task The_server_refuses_a_key_whose_fingerprint_does_not_match()
    {
        await using var server = await TestServer.StartAsync();
        var setupKey = await server.CreateSetupKeyAsync();
        var publisher = await server.RegisterAgentAsync(setupKey, "a");
        var publicKey = RandomNumberGenerator.GetBytes(4096);
        var wrong = RosenpassKeys.Fingerprint(publicKey);
        wrong[0] ^= 1;

        var refused = await Assert.ThrowsAsync<RpcException>(() => publisher.PublishRosenpassKeyAsync(publicKey, wrong, "100.64.0.1:9999", CancellationToken.None));

        Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
        Assert.Null(await publisher.GetRosenpassKeyAsync(wrong, CancellationToken.None));
        Assert.Null(await publisher.GetRosenpassKeyAsync(RosenpassKeys.Fingerprint(publicKey), CancellationToken.None));
    }

    [Fact]
    public async Task A_key_is_deleted_with_its_peer()
    {
        await using var server = await TestServer.StartAsync();
        var setupKey = await server.CreateSetupKeyAsync();
        var (publisherKey, publisher) = server.NewAgent();
        await publisher.RegisterAsync(setupKey, TestServer.Meta("gone"), CancellationToken.None);
        var fetcher = await server.RegisterAgentAsync(setupKey, "stays");
        var publicKey = RandomNumberGenerator.GetBytes(4096);
        var fingerprint = RosenpassKeys.Fingerprint(publicKey);
        await publisher.PublishRosenpassKeyAsync(publicKey, fingerprint, "100.64.0.1:9999", CancellationToken.None);
        Assert.NotNull(await fetcher.GetRosenpassKeyAsync(fingerprint, CancellationToken.None));

        await server.Store.RemovePeersAsync(publisherKey.PublicKey.ToBase64(), CancellationToken.None);

        Assert.Null(await fetcher.GetRosenpassKeyAsync(fingerprint, CancellationToken.None));
    }

    [Fact]
    public async Task The_agent_directory_publishes_fetches_once_caches_0600_and_refuses_a_bad_fingerprint()
    {
        await using var server = await TestServer.StartAsync();
        var setupKey = await server.CreateSetupKeyAsync();
        var publisher = await server.RegisterAgentAsync(setupKey, "a");
        ManagementClient? fetcherClient = await server.RegisterAgentAsync(setupKey, "b");
        var stateDir = Path.Combine(Path.GetTempPath(), "modular-rp-" + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            RosenpassConfig? announced = null;
            using var publishing = new RosenpassKeyDirectory(() => publisher, c => announced = c, stateDir + "-a");
            using var fetching = new RosenpassKeyDirectory(() => fetcherClient, _ => { }, stateDir);
            var publicKey = RandomNumberGenerator.GetBytes(RosenpassKeys.McEliece460896PublicKeySize);
            var fingerprint = RosenpassKeys.Fingerprint(publicKey);

            await Assert.ThrowsAsync<ArgumentException>(async () => await publishing.PublishAsync(publicKey, RosenpassKeys.Fingerprint([9]), "100.64.0.1:9999", CancellationToken.None));
            Assert.Null(announced);
            await publishing.PublishAsync(publicKey, fingerprint, "100.64.0.1:9999", CancellationToken.None);
            Assert.Equal(fingerprint, announced!.PubKeyFingerprint.ToByteArray());

            Assert.Equal(publicKey, await fetching.GetAsync(fingerprint, CancellationToken.None));
            var cached = Path.Combine(stateDir, "rosenpass-keys", Convert.ToHexStringLower(fingerprint) + ".pub");
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(cached));

            // Fetched once: with management gone, the cache answers.
            fetcherClient = null;
            Assert.Equal(publicKey, await fetching.GetAsync(fingerprint, CancellationToken.None));

            // A cache file that no longer matches its fingerprint is never returned.
            await File.WriteAllBytesAsync(cached, RandomNumberGenerator.GetBytes(64));
            await Assert.ThrowsAsync<InvalidOperationException>(async () => await fetching.GetAsync(fingerprint, CancellationToken.None));
            Assert.False(File.Exists(cached));
        }
        finally
        {
            foreach (var dir in new[] { stateDir, stateDir + "-a" })
            {
                if (Directory.Exists(dir))
                {
                    Directory.Delete(dir, recursive: true);
                }
            }
        }
    }
}
