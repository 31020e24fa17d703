module github.com/nebula-credential/nebula-credential

go 1.26.8
