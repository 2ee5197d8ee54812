using Modular.Core.Engine;

namespace Modular.Core.Tests.Engine;

/// <summary>
/// Issue 13, "a removed peer cannot rejoin": state_dir/registered keeps the SHA-256 of the setup key a peer registered
/// with, so the same key never brings a removed peer back while a different one registers it again.
/// </summary>
public sealed class RegistrationMarkerTests : IDisposable
{
    private static readonly Uri Management = new("https://management.example:33073");
    private readonly string _stateDir = Directory.CreateTempSubdirectory("modular-marker-").FullName;

    [Fact]
    public void A_removed_peer_rejoins_with_a_new_setup_key_and_stays_out_with_the_same_one()
    {
        var marker = new RegistrationMarker(_stateDir);
        Assert.Equal(RegistrationVerdict.FirstTime, marker.Check("key-one"));

        marker.Record(Management, "key-one", registered: true);

        Assert.Equal(RegistrationVerdict.SameKey, marker.Check("key-one"));
        Assert.Equal(RegistrationVerdict.NewKey, marker.Check("key-two"));
        var text = File.ReadAllText(marker.Path);
        Assert.DoesNotContain("key-one", text, StringComparison.Ordinal); // a hash, never the key
        Assert.Contains(RegistrationMarker.Hash("key-one"), text, StringComparison.Ordinal);

        // Registered again with the new key: now that one is the key a removed peer may not reuse.
        marker.Record(Management, "key-two", registered: true);
        Assert.Equal(RegistrationVerdict.SameKey, marker.Check("key-two"));
        Assert.Equal(RegistrationVerdict.NewKey, marker.Check("key-one"));

        // A login keeps the key of the last registration.
        marker.Record(Management, "key-three", registered: false);
        Assert.Equal(RegistrationVerdict.SameKey, marker.Check("key-two"));
    }

    [Fact]
    public void A_removed_peer_rejoins_an_old_marker_without_a_key_hash_refuses_until_a_login_records_the_configured_key()
    {
        var marker = new RegistrationMarker(_stateDir);
        File.WriteAllText(marker.Path, $"{Management}\n"); // as agents before issue 13 wrote it

        Assert.Equal(RegistrationVerdict.SameKey, marker.Check("any-key")); // unknown key: stay out

        marker.Record(Management, "key-one", registered: false);
        Assert.Equal(RegistrationVerdict.SameKey, marker.Check("key-one"));
        Assert.Equal(RegistrationVerdict.NewKey, marker.Check("key-two"));
    }

    public void Dispose() => Directory.Delete(_stateDir, recursive: true);
}
