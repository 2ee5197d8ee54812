using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Grpc.Net.Client;

namespace Modular.Control;

/// <summary>
/// gRPC channels to the control plane as agents need them: HTTP/2 keepalive pings so long-lived Sync and
/// signal streams notice a dead server (or NAT timeout) quickly, and an optional extra CA (the agent's
/// <c>tls_ca</c>) trusted besides the system store.
/// </summary>
public static class ControlChannel
{
    /// <param name="url">http://host:port (plaintext, loopback and tests) or https://host:port.</param>
    /// <param name="tlsCaFile">PEM file with CA certificates to trust in addition to the system store; empty: system store only.</param>
    public static GrpcChannel Create(string url, string tlsCaFile = "")
    {
        var handler = new SocketsHttpHandler
        {
            KeepAlivePingDelay = TimeSpan.FromSeconds(20),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(10),
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.Always,
            EnableMultipleHttp2Connections = true,
            ConnectTimeout = TimeSpan.FromSeconds(10),
        };
        if (tlsCaFile.Length > 0)
        {
            var extra = new X509Certificate2Collection();
            extra.ImportFromPemFile(tlsCaFile);
            if (extra.Count == 0)
            {
                throw new InvalidDataException($"{tlsCaFile} holds no PEM certificate.");
            }

            handler.SslOptions = new SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                    errors == SslPolicyErrors.None || (certificate is not null && ChainsTo(certificate, extra, errors)),
            };
        }

        // Network maps of large accounts exceed gRPC's 4 MB default (about 150 bytes per remote peer).
        return GrpcChannel.ForAddress(url, new GrpcChannelOptions { HttpHandler = handler, DisposeHttpClient = true, MaxReceiveMessageSize = 64 << 20 });
    }

    private static bool ChainsTo(X509Certificate certificate, X509Certificate2Collection roots, SslPolicyErrors errors)
    {
        // A name mismatch is never forgiven; only the trust anchor may come from the extra file.
        if ((errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0)
        {
            return false;
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(roots);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        using var leaf = new X509Certificate2(certificate);
        return chain.Build(leaf);
    }
}
