using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Grpc.Net.Client;
using Modular.Control.Crypto;
using Modular.Control.Management;

namespace Modular.Server.Tests;

public sealed class TlsTests
{
    [Fact]
    public async Task With_cert_and_key_the_server_speaks_grpc_over_tls()
    {
        var dir = TestServer.NewDataDir();
        Directory.CreateDirectory(dir);
        using var rsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=127.0.0.1", rsa, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(System.Net.IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        var certPath = Path.Combine(dir, "cert.pem");
        var keyPath = Path.Combine(dir, "key.pem");
        await File.WriteAllTextAsync(certPath, cert.ExportCertificatePem());
        await File.WriteAllTextAsync(keyPath, rsa.ExportPkcs8PrivateKeyPem());

        await using var server = await TestServer.StartAsync(Path.Combine(dir, "data"), c => c with { Tls = new Config.TlsConfig(certPath, keyPath) });
        Assert.Equal("https", server.Address.Scheme);
        var handler = new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions
            {
                // Trust exactly the certificate this test made.
                RemoteCertificateValidationCallback = (_, presented, _, _) => presented is not null && presented.GetCertHashString() == cert.GetCertHashString(),
            },
        };
        using var channel = GrpcChannel.ForAddress(server.Address, new GrpcChannelOptions { HttpHandler = handler });
        using var agent = X25519KeyPair.Generate();
        var client = new ManagementClient(channel, agent);
        var reply = await client.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta("secure"), CancellationToken.None);
        Assert.StartsWith("https://127.0.0.1:", reply.Services.SignalUrl, StringComparison.Ordinal);

        // The agent's way: ControlChannel with the certificate as tls_ca.
        using (var agentChannel = Modular.Control.ControlChannel.Create(server.Address.ToString(), certPath))
        {
            var login = await new ManagementClient(agentChannel, agent).LoginAsync(TestServer.Meta("secure"), CancellationToken.None);
            Assert.Equal(reply.PeerConfig.Address, login.PeerConfig.Address);
        }

        // Without it the certificate is not trusted.
        using (var untrusting = Modular.Control.ControlChannel.Create(server.Address.ToString()))
        {
            var e = await Assert.ThrowsAsync<Grpc.Core.RpcException>(() => new ManagementClient(untrusting, agent).GetServerKeyAsync(CancellationToken.None));
            Assert.True(e.StatusCode is Grpc.Core.StatusCode.Unavailable or Grpc.Core.StatusCode.Internal, e.ToString());
            Assert.Contains("SSL", e.ToString(), StringComparison.OrdinalIgnoreCase);
        }

        await server.DisposeAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(dir, recursive: true);
    }
}
